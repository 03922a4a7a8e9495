"""Model directories written whole or not at all, by one process at a time.

A writer opens the lock file beside the directory (`lock_for`) and holds it (`held`): processes that start
together then build the directory once, and whatever staging directory is left while the lock is held was
left by a writer that was killed, so it is removed. `staged` gives a temporary sibling that is renamed into
place only when the block ends without an error, so a reader never sees half a directory.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


def lock_for(directory: Path) -> IO[str]:
    """The open lock file of `directory` (its parent is created); OSError where that cannot be written."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    return (directory.parent / f".{directory.name}.lock").open("w")


@contextmanager
def held(lock: IO[str], directory: Path) -> Iterator[None]:
    """Hold `lock` (released when it closes, also if this process dies) with the leftovers of killed writers
    of `directory` cleared."""
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        parent = directory.parent
        for leftover in [*parent.glob(f".{directory.name}.tmp-*"), *parent.glob(f"{directory.name}.tmp-*")]:
            shutil.rmtree(leftover, ignore_errors=True)
        yield


@contextmanager
def staged(directory: Path) -> Iterator[Path]:
    """A temporary sibling of `directory` to write into, renamed over it when the block succeeds and removed
    when it does not (an exception, a signal's included). Use it while the directory's lock is `held`."""
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; models are no secret
        yield staging
        if directory.exists():  # a broken one, or one of another format
            shutil.rmtree(directory)
        os.replace(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
