"""Background work below the line on a shared CPU.

A Triton python model's instances are stub processes of their own, so a model that is never
on the line's path (photo enhancement, the anomaly model's batch fitting) can step aside
from inside its ``initialize``: with ``idle`` (Linux ``SCHED_IDLE``) its threads run only on
cycles nothing else wants; ``nice:N`` is the milder form. Lowering one's own priority needs
no privilege. On Linux both are per thread, so every thread the process has is changed,
and threads started later inherit it from the one that starts them.
"""

from __future__ import annotations

import os
from pathlib import Path


def _threads() -> list[int]:
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return [0]


def lower(policy: str) -> str:
    """Apply ``policy`` ("", "normal", "idle" or "nice:N") to this process; returns what
    was applied, so the model can log it. An unknown policy is a configuration error."""
    policy = (policy or "normal").strip().lower()
    if policy == "normal":
        return policy
    if policy == "idle":
        if not hasattr(os, "SCHED_IDLE"):
            return "normal (SCHED_IDLE unavailable here)"
        for tid in _threads():
            try:
                os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
            except ProcessLookupError:
                pass  # a thread that ended meanwhile
            except OSError as e:  # a sandboxed kernel that refuses: run normally, say so
                return f"normal ({policy} refused: {e.strerror})"
        return policy
    if policy.startswith("nice:"):
        n = int(policy[5:])
        for tid in _threads():
            try:
                os.setpriority(os.PRIO_PROCESS, tid, max(os.getpriority(os.PRIO_PROCESS, tid), n))
            except ProcessLookupError:
                pass
            except OSError as e:
                return f"normal ({policy} refused: {e.strerror})"
        return policy
    raise ValueError(f"cpu_priority must be normal, idle or nice:N, not {policy!r}")


def describe(pid: int | str = "self") -> list[tuple[int, int, int]]:
    """(thread id, scheduling policy, niceness) of every thread of a process: for tests."""
    out = []
    for t in Path(f"/proc/{pid}/task").iterdir():
        tid = int(t.name)
        try:
            out.append((tid, os.sched_getscheduler(tid), os.getpriority(os.PRIO_PROCESS, tid)))
        except (ProcessLookupError, PermissionError):
            pass
    return out
