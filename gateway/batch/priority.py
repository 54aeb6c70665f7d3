"""Job priorities and the anti-starvation rule.

Rule: a job's *effective* level is its own level plus one for every ``aging_s`` seconds it
has been waiting, capped at URGENT. The scheduler always hands the broker chunks of the job
with the highest effective level first (ties: the older job). So an URGENT job overtakes a
LOW one at once, and a LOW job that keeps losing climbs to URGENT after ``3 * aging_s`` and is
then served in turn with the newest URGENT work: nothing waits forever.
"""

from __future__ import annotations

import enum


class Priority(enum.IntEnum):
    LOW = 0
    NORMAL = 1
    HIGH = 2
    URGENT = 3

    @classmethod
    def parse(cls, value: str | int | Priority) -> Priority:
        if isinstance(value, int):
            return cls(value)
        try:
            return cls[str(value).strip().upper()]
        except KeyError:
            raise ValueError(f"unknown priority {value!r}; use one of "
                             f"{', '.join(p.name.lower() for p in cls)}") from None


# RabbitMQ priority queues: 0..MAX_BROKER_PRIORITY, higher first (x-max-priority on the queue)
MAX_BROKER_PRIORITY = 9


def effective_level(priority: int, waited_s: float, aging_s: float) -> int:
    if aging_s <= 0:
        return int(priority)
    return min(int(Priority.URGENT), int(priority) + int(max(waited_s, 0.0) // aging_s))


def broker_priority(level: int) -> int:
    """An effective level as a message priority (spread over the queue's range)."""
    return round(level * MAX_BROKER_PRIORITY / int(Priority.URGENT))
