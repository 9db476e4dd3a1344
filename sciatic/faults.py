"""Crash points for the crash-safety tests.

``crash_point(name)`` does nothing unless ``SCIATIC_FAULT_AT`` is set. When it
is an integer N, the process kills itself with SIGKILL at the N-th crash point
it passes; when it is a name, at the first crash point of that name. The tests
use it to prove that every step recovers from a crash at any of these points.
It costs one dictionary lookup otherwise.
"""

from __future__ import annotations

import os
import signal

__all__ = ["FAULT_ENV", "crash_point"]

FAULT_ENV = "SCIATIC_FAULT_AT"
_passed = 0


def crash_point(name: str) -> None:
    """A place where a crash must be survivable; ``name`` says what has just become durable."""
    global _passed
    target = os.environ.get(FAULT_ENV)
    if target is None:
        return
    _passed += 1
    if (target.isdigit() and _passed >= int(target)) or target == name:
        os.kill(os.getpid(), signal.SIGKILL)
