"""Child processes that cannot outlive their parent."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable


def die_with_parent(parent: int | None = None) -> Callable[[], None] | None:
    """A `preexec_fn` that has the kernel SIGTERM the child when its parent dies (Linux), rather than leave an
    orphan that holds a port or a lock; None elsewhere. With `parent` (the caller's pid), a child whose parent
    died before the request was made exits at once.

    The prctl function is looked up here, before the fork: after it, the child may only call what is loaded.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig, sigterm = 1, int(signal.SIGTERM)

    def set_death_signal() -> None:
        prctl(pr_set_pdeathsig, sigterm, 0, 0, 0)
        if parent is not None and os.getppid() != parent:
            os._exit(1)

    return set_death_signal
