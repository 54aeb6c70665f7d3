"""The pairing decision of one board, as a pure state machine (no I/O: the pair stores in
the gateway apply it atomically, in memory or in a Redis transaction).

A board's state is the sides that have arrived plus at most one *decision*. Only the
GPIO-driving side decides, once its wait for the other side ended:

    pending --(driver decides, other side present)--> paired
    pending --(driver decides, other side absent)---> partial --(other side arrives)--> late

The first decision stands forever: a retry of the driving request (same idempotency scope),
a second replica or a duplicate frame all read the decision that was made, never make
another. The decision carries the pulse and its ``owner`` (the request that may fire it),
so a retry after a failure gets the very pulse that was decided, and anyone else gets none.

A non-driving side puts its result first, then reads the decision. Because the driver
decides atomically against the sides present at that instant, what each side records
agrees with what the sorter was told:

- no decision yet -> ``pending`` (the decision that follows sees this side: ``paired``);
- decision ``paired`` -> ``paired``;
- decision ``partial`` -> ``late`` (this side came after the sorter was told).

Records that do not pair at all: ``single`` (a lone frame, seed ``/predict``), ``dual`` (both
sides in one request), ``replay`` (a frame the edge spooled and sent again later: a record,
never a pulse).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from pcb.verdict import SideVerdict, fuse

PENDING, PAIRED, PARTIAL, LATE = "pending", "paired", "partial", "late"
SINGLE, DUAL, REPLAY = "single", "dual", "replay"
OTHER = {"left": "right", "right": "left"}


@dataclass(frozen=True)
class Decision:
    """What the sorter is told about one board (stored with the board; the first one wins)."""

    pairing: str  # PAIRED or PARTIAL
    code: int  # fused board verdict code
    confidence: float
    pin: int
    duration_ms: int
    owner: str  # the request that may fire the pulse (idempotency scope or inspection id)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Decision:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


def side_of(result: dict | None) -> SideVerdict | None:
    """A side as kept in the pair store (``{"code", "confidence", ...}``)."""
    return SideVerdict(int(result["code"]), float(result["confidence"])) if result else None


def decide(existing: dict | None, driver_side: str, mine: SideVerdict, other: dict | None, owner: str) -> dict:
    """The driver's decision, given the board's stored decision (if any) and the other side
    as stored at this instant. Pure: the store calls it inside its atomic section."""
    if existing is not None:
        return existing
    sides = {driver_side: mine, OTHER[driver_side]: side_of(other)}
    board = fuse(sides["left"], sides["right"])
    return Decision(PAIRED if other is not None else PARTIAL, board.code, board.confidence,
                    board.gpio_pin, board.gpio_duration_ms, owner).to_dict()


def report(decision: dict | None) -> str:
    """What a non-driving side records, read *after* its own side was stored."""
    if decision is None:
        return PENDING
    return PAIRED if decision["pairing"] == PAIRED else LATE


def board_id(line_id: str, session: str, n: int) -> str:
    """The id both edges give the n-th board of a line session (``pi_edge/trigger.py``)."""
    return f"{line_id}-{session}-{n:06d}"
