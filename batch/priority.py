"""Job priorities and the anti-starvation rule.

Rule: a job ages only while it *waits*: it has queued chunks and none in flight (none in
the broker, none in a worker's hands). Its wait counts from the last time it held a slot
(its last dispatch, lease renewal or finished chunk), or from its creation if it never did.
Its *effective* level is its own level plus one for every ``aging_s`` seconds of that wait,
capped at URGENT. The scheduler hands out free window slots one at a time, each to the job
with the highest effective level; at equal level an aged job goes first (longest wait
first), then un-aged jobs in submission order. A job that gets a slot is no longer waiting,
so it drops back to its own level at once: aging buys one chunk, not the whole window.

Bounds (a "slot" is one of the ``BATCH_WINDOW`` chunks in flight freeing up):

- New URGENT work overtakes at once: its first chunk takes the first slot that frees after
  submission, behind at most one chunk of each job that has reached URGENT by aging, i.e.
  has had nothing in flight for ``(3 - its level) * aging_s`` (3 minutes for LOW at the
  default 60 s). A job that is running - however long, however old - has a chunk in flight,
  does not age and never outranks fresher work of a higher level.
- Nothing starves: a job with queued work and nothing in flight reaches URGENT within
  ``(3 - its level) * aging_s`` and then gets one of the next ``1 + J`` free slots, J being
  the other jobs aged to URGENT at that moment. Under a steady stream of URGENT work a LOW
  job therefore still finishes a chunk about every ``3 * aging_s`` plus one chunk's time.
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
    """``waited_s``: time with queued work and nothing in flight (0 while a chunk is out)."""
    if aging_s <= 0:
        return int(priority)
    return min(int(Priority.URGENT), int(priority) + int(max(waited_s, 0.0) // aging_s))


def rank_key(priority: int, waited_s: float, created_s: float, aging_s: float) -> tuple:
    """Sort key, smallest first: highest effective level; at equal level aged jobs before
    un-aged ones, the longest wait first; then the older job (``created_s``, a timestamp)."""
    level = effective_level(priority, waited_s, aging_s)
    aged = level > int(priority)
    return (-level, 0 if aged else 1, -waited_s if aged else created_s)


def broker_priority(level: int) -> int:
    """An effective level as a message priority (spread over the queue's range)."""
    return round(level * MAX_BROKER_PRIORITY / int(Priority.URGENT))
