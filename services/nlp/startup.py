"""The nlp service's way to ready: it answers its probes at once, and loads its models in the background.

Prepared models (`services.nlp.prepare.missing` finds nothing to do) are loaded off the event loop (`/readyz`:
503 "preparing", step "loading"). Missing ones are prepared first by `supportbot prepare --json-progress` in a
child process, so that torch never loads into the service and a stop can end it: its progress lines are what
`/readyz` reports meanwhile, and a failure is reported there ("failed") and logged.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import TYPE_CHECKING, TypeVar

from services.nlp.encoder import encoder_dir
from services.nlp.prepare import PreparationFailed, missing
from supportbot.health import Progress
from supportbot.processes import die_with_parent
from supportbot.settings import NlpSettings

if TYPE_CHECKING:
    from services.nlp.analyzer import Analyzer

log = logging.getLogger(__name__)


CHILD_SHARE = 0.9  # of /readyz's fraction, when the models must be prepared first: loading them takes the rest
CHILD_STOP_GRACE_S = 5.0  # SIGTERM, then SIGKILL: the service is gone within 10 s of its own SIGTERM
T = TypeVar("T")


class ChildStopped(PreparationFailed):
    """The preparation child was ended by a signal (its process group's stop, or someone's by hand)."""


class ModelStartup:
    """How the nlp service becomes ready without holding up its probes (`app.state.preparation`).

    Prepared models are loaded off the event loop (`/readyz`: step "loading"); missing ones are prepared first
    by `supportbot prepare --json-progress` in a child process, whose progress lines `status()` reports.
    `close()` ends the child (SIGTERM, then SIGKILL); the child also ends when this process dies, even by
    SIGKILL (PR_SET_PDEATHSIG on Linux, and its own check of its parent elsewhere).
    """

    def __init__(self, settings: NlpSettings, on_ready: Callable[[Analyzer], None]) -> None:
        self.settings = settings
        self._on_ready = on_ready
        self._progress = Progress(step="starting", fraction=0.0)
        self._child: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def status(self) -> Progress:
        return self._progress

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="nlp-model-startup")

    async def wait(self, timeout_s: float) -> Progress:
        """The status once ready or failed (or after `timeout_s`)."""
        if self._task is not None:
            with suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
        return self._progress

    def unavailable_reason(self) -> str:
        """Why the models cannot answer yet, for a 503."""
        progress = self._progress
        if progress.error:
            return f"the nlp models could not be prepared: {progress.error}"
        return f"the nlp models are not ready yet ({progress.step}, {progress.fraction:.0%} done); retry shortly"

    async def close(self) -> None:
        self._closing = True
        child = self._child
        if child is not None and child.returncode is None:
            with suppress(ProcessLookupError):  # it may have ended this very moment
                child.terminate()
            try:
                await asyncio.wait_for(child.wait(), CHILD_STOP_GRACE_S)
            except TimeoutError:
                with suppress(ProcessLookupError):
                    child.kill()
                await child.wait()
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        started = time.perf_counter()
        try:
            gaps = await asyncio.to_thread(missing, self.settings)
            share = 0.0
            if gaps:
                log.info("models not prepared yet: preparing them in a child process",
                         extra={"supportbot.missing": gaps})
                await self._prepare_in_child()
                share = CHILD_SHARE
            if self._closing:
                return
            self._progress = Progress(step="loading", fraction=share)
            analyzer = await _in_daemon_thread(lambda: self._load(share))
            self._on_ready(analyzer)
            self._progress = Progress(step="ready", fraction=1.0, done=True)
            log.info("nlp models ready", extra={"supportbot.seconds": round(time.perf_counter() - started, 1)})
        except Exception as exc:  # noqa: BLE001 - reported on /readyz and in the log, not raised into the loop
            if self._closing:
                return
            reason = str(exc) if isinstance(exc, PreparationFailed) else f"{type(exc).__name__}: {exc}"
            self._progress = Progress(step=self._progress.step, fraction=self._progress.fraction, error=reason)
            # A signal to the whole process group reaches the child before this service's own shutdown begins:
            # a warning, not an error, for what is most likely a stop.
            log.log(logging.WARNING if isinstance(exc, ChildStopped) else logging.ERROR,
                    "nlp models could not be prepared: %s", reason)

    def _load(self, share: float) -> Analyzer:
        from services.nlp.analyzer import Analyzer

        def progress(_detail: str, fraction: float) -> None:
            self._progress = Progress(step="loading", fraction=round(share + (1 - share) * fraction * 0.99, 4))

        analyzer = Analyzer.from_settings(self.settings, progress=progress)
        # What was just built lives as long as the process: out of the cyclic GC's full collections
        # (`supportbot.app` freezes what the lifespan built; this comes later).
        gc.collect()
        gc.freeze()
        return analyzer

    async def _prepare_in_child(self) -> None:
        settings = self.settings
        env = {**os.environ, "SUPPORTBOT_DATA_DIR": str(settings.data_dir.resolve()),
               "SUPPORTBOT_MODELS_DIR": str(settings.prepared_models_dir.resolve()),
               "NLP_ENCODER_DIR": str(encoder_dir(settings).resolve())}
        if settings.model_dir is not None:
            env["NLP_MODEL_DIR"] = str(settings.model_dir.resolve())
        # In this process's group, so that whoever stops the service's group stops its preparation too.
        self._child = child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "supportbot.cli", "prepare", "--json-progress", env=env,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, preexec_fn=die_with_parent(os.getpid()))
        error: str | None = None
        assert child.stdout is not None
        while raw := await child.stdout.readline():
            try:
                line = json.loads(raw)
                step, fraction = str(line["step"]), float(line["fraction"])
            except (ValueError, KeyError, TypeError):
                continue  # not a progress line
            if line.get("error"):
                error = str(line["error"])
            elif not line.get("done"):
                self._progress = Progress(step=step, fraction=round(max(self._progress.fraction,
                                                                        fraction * CHILD_SHARE), 4))
        code = await child.wait()
        if code == 0 or self._closing:
            return
        signum = -code if code < 0 else code - 128 if code > 128 else None
        if signum in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            raise ChildStopped(f"`supportbot prepare` was stopped by {signal.Signals(signum).name}")
        raise PreparationFailed(error or f"`supportbot prepare` exited with {code}")


def _in_daemon_thread(work: Callable[[], T]) -> Awaitable[T]:
    """`work()` on a daemon thread: a shutdown does not wait for it (loading writes nothing, so it may be cut)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():
            outcome()

    def run() -> None:
        try:
            result = work()
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            error = exc
            with suppress(RuntimeError):  # the loop has closed: nobody is waiting
                loop.call_soon_threadsafe(settle, lambda: future.set_exception(error))
        else:
            with suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, lambda: future.set_result(result))

    threading.Thread(target=run, name="nlp-model-loading", daemon=True).start()
    return future
