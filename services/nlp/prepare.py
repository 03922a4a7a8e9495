"""Preparing the nlp models once, and the nlp service's way to ready.

`supportbot prepare` writes into `NlpSettings.prepared_models_dir` (`SUPPORTBOT_MODELS_DIR`, else
`<data_dir>/models`):

    encoders/minilm-l6-int8/   the sentence encoder, exported from the installed package (the one step that
                               needs torch; `NLP_ENCODER_DIR` puts it elsewhere)
    default-<hash>/            the default intent model, trained on the shipped intents (skipped when
                               `NLP_MODEL_DIR` names the model to serve)

Each is staged in a temporary directory and renamed into place (`build_encoder`, `load_or_train_default`), so
an artefact that is there is complete, and what a killed run left staged is removed by the next one. `missing`
tells what is not there from the files alone; a run with nothing missing writes nothing (images bake the
directory read-only). Runs on one directory take turns under `.prepare.lock`: the one that waits shows the
holder's progress (`.prepare-progress.json`), then finds the work done.

Stopping: SIGINT or SIGTERM sets a stop flag, checked at each step and at training's checkpoints. The work
between them (a regression fit takes up to 25 s on a busy machine, torch's export 6 s) has no checkpoints, so
there the signal interrupts at once, as Ctrl-C interrupts any Python code: that work writes only into staging
directories, removed on the way out. Through export and training the main thread gets back to Python within
1.1 s (measured with an outside sender's signals, two idle cores), and the process then exits without the
interpreter's teardown (2-3 s with the models loaded): sampled through whole runs on a loaded machine, a stop
took 0.03 to 1.3 s. faulthandler's watchdog thread, which needs no Python, ends whatever still runs
`STOP_DEADLINE_S` after the signal.

The nlp service never prepares in its own process: it runs `supportbot prepare --json-progress` as a child
(`services.nlp.startup`).
"""

from __future__ import annotations

import faulthandler
import fcntl
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from services.nlp.encoder import build_encoder, can_export, encoder_dir, is_exported
from services.nlp.encoders import available_names
from services.nlp.model_format import default_model_dir, is_model_dir
from supportbot.settings import NlpSettings

log = logging.getLogger(__name__)

LOCK_FILE = ".prepare.lock"
PROGRESS_FILE = ".prepare-progress.json"
# Each step's seconds on two idle cores, the weights of the fraction done (so that a bar's ETA means something).
STEP_SECONDS = {"encoder": 14.0, "encoders": 3.0, "default_model": 64.0}
STEP_NAMES = {"encoder": "exporting the sentence encoder", "encoders": "loading the sentence encoders",
              "default_model": "training the default intent model"}
STOP_DEADLINE_S = 8.0  # after a stop signal the process is gone by then, whatever it was doing
LOCK_POLL_S = 0.25
PUBLISH_EVERY_S = 0.5  # how often the lock holder rewrites its progress file

Report = Callable[[str, float], None]
"""Told the step under way and the fraction of the whole preparation done (0..1)."""


class PreparationFailed(Exception):
    """Preparation cannot complete; the message says why and what to do."""


class Stopped(BaseException):
    """A stop signal arrived. A BaseException, as KeyboardInterrupt is: code that handles its own errors with
    `except Exception` must not swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopFlag:
    """Set by SIGINT or SIGTERM while `installed()`; `check()` raises Stopped once it is set, and a signal that
    arrives `interruptible()` raises it at once, wherever the main thread is."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._interruptible = 0

    def request(self, signum: int) -> None:
        if self.signum is not None:
            return  # a second Ctrl-C: already stopping (and bounded by the deadline)
        self.signum = signum
        faulthandler.dump_traceback_later(STOP_DEADLINE_S, exit=True)
        if self._interruptible:
            raise Stopped(signum)

    def check(self) -> None:
        if self.signum is not None:
            raise Stopped(self.signum)

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """Work that may be abandoned at any point: everything it writes is staged, and renamed in at its end."""
        self.check()
        self._interruptible += 1
        try:
            yield
        finally:
            self._interruptible -= 1

    @contextmanager
    def installed(self) -> Iterator[StopFlag]:
        """SIGINT and SIGTERM set this flag (in the main thread) until the block ends."""
        previous = {sig: signal.signal(sig, lambda signum, _frame: self.request(signum))
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            faulthandler.cancel_dump_traceback_later()


def missing(settings: NlpSettings) -> list[str]:
    """What `prepare` would make here, from the files and the installed packages alone (a fraction of a second,
    nothing imported that serving does not import anyway); empty: prepared."""
    gaps: list[str] = []
    encoder = encoder_dir(settings)
    if not is_exported(encoder) and can_export():  # without torch it cannot be, and models do without it
        gaps.append(f"the sentence encoder ({encoder})")
    if settings.model_dir is None:
        model = default_model_dir(settings.prepared_models_dir, available_names(settings))
        if not is_model_dir(model) or gaps:  # once the encoder is exported, the model is another one
            gaps.append(f"the default intent model ({model if not gaps else settings.prepared_models_dir})")
    return gaps


@dataclass
class Outcome:
    made: list[str] = field(default_factory=list)  # what this run wrote
    notes: list[str] = field(default_factory=list)  # what the operator should know


class _Tracker:
    """Maps each step's own progress onto the whole preparation's, reports it, and checks the stop flag."""

    def __init__(self, steps: list[str], report: Report, stop: StopFlag, publish: Report) -> None:
        self._starts: dict[str, float] = {}
        total = sum(STEP_SECONDS[step] for step in steps)
        at = 0.0
        for step in steps:
            self._starts[step] = at / total
            at += STEP_SECONDS[step]
        self._weights = {step: STEP_SECONDS[step] / total for step in steps}
        self._report, self._stop, self._publish = report, stop, publish
        self.fraction = 0.0

    def __call__(self, step: str, detail: str | None, fraction: float) -> None:
        self.fraction = max(self.fraction, self._starts[step] + self._weights[step] * min(max(fraction, 0.0), 1.0))
        text = f"{STEP_NAMES[step]} ({detail})" if detail else STEP_NAMES[step]
        self._report(text, self.fraction)
        self._publish(text, self.fraction)
        self._stop.check()

    def hook(self, step: str) -> Callable[[str, float], None]:
        """A progress hook for `build_encoder` or a training checkpoint."""
        return lambda detail, fraction: self(step, detail, fraction)


def prepare(settings: NlpSettings, report: Report, stop: StopFlag) -> Outcome:
    """Make what is missing (`missing`); Stopped when `stop` is, PreparationFailed when it cannot."""
    if not missing(settings):
        return Outcome()
    models_dir = settings.prepared_models_dir
    with _turn(models_dir, report, stop) as publish:
        gaps = missing(settings)
        if not gaps:
            return Outcome(notes=["another run prepared it meanwhile"])
        directory = encoder_dir(settings)
        steps = ([] if is_exported(directory) or not can_export() else ["encoder"])
        steps += [] if settings.model_dir is not None else ["encoders", "default_model"]
        track = _Tracker(steps, report, stop, publish)
        with stop.interruptible():  # everything from here on writes only into staging directories
            outcome = _make(steps, settings, track)
        track(steps[-1], "done", 1.0)
        return outcome


def _make(steps: list[str], settings: NlpSettings, track: _Tracker) -> Outcome:
    outcome = Outcome()
    models_dir = settings.prepared_models_dir
    if "encoder" in steps:
        track("encoder", None, 0.0)
        directory = encoder_dir(settings)
        build_encoder(directory, progress=track.hook("encoder"))
        outcome.made.append(f"the sentence encoder ({directory})")
    if "default_model" in steps:
        track("encoders", None, 0.0)
        from services.nlp.classifier import load_or_train_default
        from services.nlp.encoder import ENCODER_NAME
        from services.nlp.encoders import frozen_encoders

        encoders = frozen_encoders(settings, build=False)
        names = [encoder.name for encoder in encoders]
        model = default_model_dir(models_dir, names)
        if ENCODER_NAME not in names:
            outcome.notes.append("the MiniLM sentence encoder is unavailable (see the warning above; exporting it "
                                 "needs pip install 'supportbot[prepare]'): the default intent model does without it")
        track("default_model", None, 0.0)
        if not is_model_dir(model):
            load_or_train_default(models_dir, encoders=encoders, checkpoint=track.hook("default_model"))
            if not is_model_dir(model):
                raise PreparationFailed(f"could not save the default intent model in {models_dir} (see the warning "
                                        "above)")
            outcome.made.append(f"the default intent model ({model})")
    return outcome


@contextmanager
def _turn(models_dir: Path, report: Report, stop: StopFlag) -> Iterator[Report]:
    """Hold `models_dir`'s preparation lock, waiting (and showing the holder's progress) while another run has it.

    Yields how to publish this run's progress to runs that wait.
    """
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
        handle = (models_dir / LOCK_FILE).open("a")
    except OSError as exc:
        raise PreparationFailed(f"cannot write to {models_dir} ({exc.strerror or exc}): set SUPPORTBOT_MODELS_DIR "
                                "to a writable directory") from exc
    progress_file = models_dir / PROGRESS_FILE
    with handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released when the file closes or we die
                break
            except BlockingIOError:
                theirs = _read_progress(progress_file)
                report(f"waiting for another preparation (pid {theirs.get('pid', '?')}): "
                       f"{theirs.get('step', 'starting')}", float(theirs.get("fraction", 0.0)))
                stop.check()
                time.sleep(LOCK_POLL_S)
        last = 0.0

        def publish(step: str, fraction: float) -> None:
            nonlocal last
            if time.monotonic() - last < PUBLISH_EVERY_S and fraction < 1:
                return
            last = time.monotonic()
            staged = progress_file.with_name(f"{PROGRESS_FILE}.{os.getpid()}")
            with suppress(OSError):  # only a waiting run's display would miss it
                staged.write_text(json.dumps({"pid": os.getpid(), "step": step, "fraction": round(fraction, 4)}))
                os.replace(staged, progress_file)

        try:
            yield publish
        finally:
            for path in (progress_file, progress_file.with_name(f"{PROGRESS_FILE}.{os.getpid()}")):
                with suppress(OSError):
                    path.unlink()


def _read_progress(path: Path) -> dict[str, Any]:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


# --- `supportbot prepare` ---------------------------------------------------------------------------------------


class _Lines:
    """Plain progress lines on stderr when it is not a terminal: on each new step, and every 5 s."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self._step = ""
        self._percent = -1
        self._at = 0.0

    def __call__(self, step: str, fraction: float) -> None:
        main, percent = step.split(" (")[0], int(fraction * 100)
        if main == self._step and (percent == self._percent or time.monotonic() - self._at < 5):
            return
        self._step, self._percent, self._at = main, percent, time.monotonic()
        self.stream.write(f"supportbot prepare: {step} [{percent}%]\n")
        self.stream.flush()

    def close(self) -> None:
        pass


class _Bar:
    """A tqdm bar with an ETA on a terminal (stderr)."""

    def __init__(self, stream: IO[str]) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=100, file=stream, dynamic_ncols=True, desc="preparing",
                         bar_format="{percentage:3.0f}%|{bar:24}| {elapsed}<{remaining} {desc}")

    def __call__(self, step: str, fraction: float) -> None:
        self._bar.set_description_str(step, refresh=False)
        self._bar.update(max(0.0, round(fraction * 100, 1) - self._bar.n))

    def close(self) -> None:
        self._bar.close()


class _Json:
    """One JSON object a line on stdout, for a parent process: {"step", "fraction"}, then "done" or "error"."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def __call__(self, step: str, fraction: float, **extra: object) -> None:
        with suppress(BrokenPipeError):  # the parent is gone: the stop comes from `_stop_when_orphaned`
            self.stream.write(json.dumps({"step": step, "fraction": round(fraction, 4), **extra}) + "\n")
            self.stream.flush()

    def close(self) -> None:
        pass


def run_command(*, json_progress: bool = False) -> int:
    """`supportbot prepare`: 0 when prepared (or already), 1 when it failed, 128 + the signal when stopped."""
    try:
        settings = NlpSettings()
    except ValueError as exc:
        print(f"supportbot prepare: {exc}", file=sys.stderr)
        return 2
    display: _Json | _Bar | _Lines
    if json_progress:
        display = _Json(sys.stdout)
        _log_json_to_stderr(settings.log_level)
        _stop_when_orphaned(os.getppid())
    else:
        display = _Bar(sys.stderr) if sys.stderr.isatty() else _Lines(sys.stderr)
        logging.basicConfig(level=logging.WARNING, format="supportbot prepare: %(message)s", stream=sys.stderr)
    started = time.perf_counter()
    last = {"step": "starting", "fraction": 0.0}

    def report(step: str, fraction: float) -> None:
        last.update(step=step, fraction=fraction)
        display(step, fraction)

    with StopFlag().installed() as stop:
        try:
            outcome = prepare(settings, report, stop)
        except Stopped as stopped:
            display.close()
            print(f"supportbot prepare: stopped by {stopped}; what was complete is kept, nothing half-written is, "
                  "and the next run makes the rest", file=sys.stderr)
            # Out at once: tearing the interpreter down with the models in memory takes 2-3 s on a busy machine
            # (measured), and nothing is left to clean up (what was staged has been removed on the way here).
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(128 + stopped.signum)
        except Exception as exc:  # noqa: BLE001 - whatever went wrong, the operator gets one clear line
            display.close()
            reason = str(exc) if isinstance(exc, PreparationFailed) else f"{type(exc).__name__}: {exc}"
            if isinstance(display, _Json):
                display(str(last["step"]), float(last["fraction"]), error=reason)
            if not isinstance(exc, PreparationFailed):
                log.error("preparation failed", exc_info=True)
            print(f"supportbot prepare: failed: {reason}", file=sys.stderr)
            return 1
    seconds = time.perf_counter() - started
    if isinstance(display, _Json):
        display("done", 1.0, done=True)
    display.close()
    for note in outcome.notes:
        print(f"supportbot prepare: note: {note}", file=sys.stderr)
    where = settings.prepared_models_dir
    if outcome.made:
        print(f"supportbot prepare: prepared {' and '.join(outcome.made)} in {seconds:.0f} s", file=sys.stderr)
    else:
        print(f"supportbot prepare: already prepared in {where}; nothing to do", file=sys.stderr)
    return 0


def _log_json_to_stderr(level: str) -> None:
    """The service's JSON logs, on stderr: stdout carries the progress lines."""
    from supportbot.logging import configure_logging

    configure_logging("nlp", level)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(sys.stderr)


def _stop_when_orphaned(parent: int) -> None:
    """Stop as SIGTERM would when the parent process is gone (where PR_SET_PDEATHSIG is not there to)."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
