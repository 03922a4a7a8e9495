"""Child processes and their groups: ones that cannot outlive their parent, and finding or signalling groups."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterable
from pathlib import Path


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


def live_groups(pgids: Iterable[int]) -> set[int]:
    """The groups among `pgids` that still hold a running process (zombies hold nothing and do not count)."""
    wanted = set(pgids)
    if not wanted:
        return set()
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: ask the kernel group by group
        alive = set()
        for pgid in wanted:
            try:
                os.killpg(pgid, 0)
                alive.add(pgid)
            except ProcessLookupError:
                pass
            except PermissionError:
                alive.add(pgid)
        return alive
    alive = set()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()  # after "pid (comm)": state, ppid, pgrp, ...
        if len(fields) > 2 and fields[0] not in ("Z", "X") and int(fields[2]) in wanted:
            alive.add(int(fields[2]))
    return alive


def signal_group(pgid: int | None, sig: signal.Signals) -> None:
    if pgid is None:
        return
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
