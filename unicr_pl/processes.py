"""Child processes that never outlive their parent (C-OPT runs, DDP ranks)."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent: int | None = None) -> None:
    """Asks Linux to SIGKILL this process when its parent dies (prctl PR_SET_PDEATHSIG); a
    no-op elsewhere. Safe in a Popen preexec_fn. With `parent` (the pid expected as parent),
    exits at once if that parent already died before the request was made."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if parent is not None and os.getppid() != parent:
        os._exit(1)  # the parent is gone already: nobody would merge or read our rows


__all__ = ["die_with_parent"]
