"""Child processes that die with their parent, even when the parent is killed with SIGKILL.

Linux's ``PR_SET_PDEATHSIG`` asks the kernel to signal a process when the thread that
forked it exits. Two traps decide how it is used here: the setting is cleared when the
process changes its user id (so a server that drops root by itself, as Mosquitto does,
must instead be started as its unprivileged user), and a parent that died between the
fork and the ``prctl`` call is missed (so the parent's pid is checked afterwards).
Elsewhere (not Linux) this is a no-op, and children are stopped only on a clean exit.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1
# Looked up once, here: between fork and exec the child may only make the call, since
# loading a library there could wait for a lock another thread of the parent held.
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def die_with_parent(parent_pid: int, signum: int = signal.SIGTERM) -> None:
    """Make the calling process receive ``signum`` when ``parent_pid`` (its parent) exits."""
    if _prctl is None:
        return
    if _prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0:
        # Not fatal: the process still runs, it only loses the guarantee.
        return
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signum)


def preexec_die_with_parent(signum: int = signal.SIGTERM) -> Callable[[], None]:
    """A ``preexec_fn`` for ``subprocess.Popen``: the child gets ``signum`` when we exit.

    ``Popen`` switches to its ``user``/``group`` before calling ``preexec_fn``, so the
    setting survives a child started as another user. Start the child from a thread
    that lives as long as the child should (the main thread, usually).
    """
    parent = os.getpid()
    return lambda: die_with_parent(parent, signum)
