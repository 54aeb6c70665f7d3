"""Board identity: how Pi 1 and Pi 2 agree which two frames show the same board.

On the line a photo-eye (or the PLC's "board in position" output) is wired to an input pin
of *both* Pis. Each Pi counts the rising edges (debounced) from the same start signal; the
n-th edge is board n on both sides, so both post ``<line_id>-<session>-<n>``, and the
gateway pairs on that id within its pairing window. ``session`` changes at every (re)start
of counting (shift start, both edges restarted by the same systemd target), so a restart
can never pair board 12 of the morning with board 12 of the afternoon. A missed edge on one
side shows up at once as ``partial``/``late`` pairings in the gateway's metrics and system
log (the operator re-syncs by restarting both edges at a gap in the line).

Without a photo-eye (``trigger_pin: null``) every captured frame counts as the next board:
right for simulation (both edges replay the same synthetic board sequence) and for cameras
that the PLC triggers itself.
"""

from __future__ import annotations

import secrets
import threading
import time

from pcb.pairing import board_id


def local_session() -> str:
    """A session made on the edge alone (gateway unreachable at start): unique per start
    (the second and 24 random bits), prefixed ``e`` so logs tell it from the gateway's."""
    return f"e{time.strftime('%y%m%d%H%M%S', time.gmtime())}{secrets.token_hex(3)}"


class BoardCounter:
    def __init__(self, line_id: str, session: str | None = None):
        self.line_id = line_id
        self.session = session or local_session()
        self.n = 0
        self._lock = threading.Lock()

    def start_session(self, session: str) -> None:
        """A new session restarts the count (before the first board of this start)."""
        with self._lock:
            self.session, self.n = session, 0

    def next_id(self) -> str:
        with self._lock:
            self.n += 1
            return board_id(self.line_id, self.session, self.n)


class PhotoEye:
    """Rising edges on a GPIO input (gpiozero ``Button``, debounced) call ``on_board``."""

    def __init__(self, pin: int, on_board, bounce_s: float = 0.02, pull_up: bool = False):
        from gpiozero import Button

        self.button = Button(pin, pull_up=pull_up, bounce_time=bounce_s)
        self.button.when_pressed = lambda: on_board()

    def close(self) -> None:
        self.button.close()
