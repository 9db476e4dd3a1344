"""Crash points for the crash-safety tests.

``checkpoint(name)`` does nothing unless ``SCIATIC_FAULT_AT`` is set to an
integer N, in which case the process kills itself with SIGKILL at the N-th
checkpoint it passes. The tests use it to prove that every step recovers from
a crash at any of these points. It costs one dictionary lookup otherwise.
"""

from __future__ import annotations

import os
import signal

_ENV = "SCIATIC_FAULT_AT"
_passed = 0


def checkpoint(name: str) -> None:
    global _passed
    target = os.environ.get(_ENV)
    if target is None:
        return
    _passed += 1
    if _passed >= int(target):
        os.kill(os.getpid(), signal.SIGKILL)


def checkpoints_passed() -> int:
    return _passed
