"""`supportbot prepare` and the nlp service's start on an unprepared models directory, as real processes.

One full preparation (a minute on two idle cores) is shared by most of these tests: the `scenario` fixture
stops a `supportbot prepare` in the middle of training, then starts `serve nlp` on the same directory, which
prepares it in the background while a second `supportbot prepare` waits its turn; the tests check what it saw.
The sentence encoder is the session's export (NLP_ENCODER_DIR), except where its export is what is stopped.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from services.nlp.encoders import available_names
from services.nlp.model_format import default_model_dir
from services.nlp.prepare import missing
from supportbot.settings import NlpSettings
from tests.helpers import REPO, SERVICE_HEADERS, free_port, spawn

STOP_LIMIT_S = 10.0  # the issue's: a stop ends preparation, training included, within 10 s
TRAINING = "training the default intent model"


def env_for(state: Path, models: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "SUPPORTBOT_DATA_DIR": str(state), "SUPPORTBOT_MODELS_DIR": str(models),
            "PYTHONUNBUFFERED": "1", **extra}


class JsonLines:
    """`supportbot prepare --json-progress` running, its progress lines read as they come."""

    def __init__(self, env: dict[str, str], stderr: IO[bytes]) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "supportbot.cli", "prepare", "--json-progress"],
                                        stdout=subprocess.PIPE, stderr=stderr, env=env, cwd=REPO, text=True)
        self.lines: list[dict[str, Any]] = []
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self._queue.put(json.loads(raw))
        self._queue.put(None)

    def wait_for(self, prefix: str, timeout_s: float = 600) -> dict[str, Any]:
        """The first line whose step starts with `prefix`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"prepare exited with {self.process.wait()} before {prefix!r}: {self.lines}")
            self.lines.append(line)
            if str(line["step"]).startswith(prefix):
                return line
        raise AssertionError(f"no {prefix!r} within {timeout_s} s: {self.lines[-5:]}")


def stop(process: subprocess.Popen[Any], sig: int) -> tuple[int, float]:
    """Send `sig`; the exit code and the seconds until the process was gone."""
    sent = time.monotonic()
    process.send_signal(sig)
    code = process.wait(timeout=60)
    return code, time.monotonic() - sent


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    """Running (a zombie that nobody reaps in a container counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every file and directory under `roots`: size and modification time."""
    return {str(path): (path.stat().st_size, path.stat().st_mtime_ns)
            for root in roots for path in [root, *sorted(root.rglob("*"))]}


def half_written(models: Path) -> list[str]:
    """Anything in `models` that is a model or part of one, or staged."""
    return sorted(p.name for p in models.iterdir() if p.name.startswith("default-") or ".tmp-" in p.name)


def readiness(port: int) -> tuple[int, dict[str, Any]]:
    response = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=3)
    return response.status_code, response.json()


@dataclass
class Scenario:
    models: Path
    state: Path
    env: dict[str, str]
    logs: Path
    prepare_lines: list[dict[str, Any]] = field(default_factory=list)
    prepare_stop: tuple[int, float] = (0, 0.0)
    after_stop: list[str] = field(default_factory=list)
    planted: Path | None = None
    healthz_while_preparing: list[int] = field(default_factory=list)
    readiness: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    analyze_before: httpx.Response | None = None
    embed_before: httpx.Response | None = None
    analyze_after: httpx.Response | None = None
    second: subprocess.CompletedProcess[str] | None = None
    second_waited_on: int | None = None


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory, shared_encoder_dir: Path) -> Iterator[Scenario]:
    root = tmp_path_factory.mktemp("prepare")
    seen = Scenario(models=root / "models", state=root / "state", env=env_for(root / "state", root / "models"),
                    logs=root)

    # 1. `supportbot prepare`, stopped once training is under way: SIGTERM lands in a regression's fit.
    with (root / "prepare.log").open("wb") as log:
        run = JsonLines(seen.env, log)
        try:
            run.wait_for(f"{TRAINING} (cross-validating")
            time.sleep(1.0)
            seen.prepare_stop = stop(run.process, signal.SIGTERM)
        finally:
            run.process.kill()
    seen.prepare_lines = run.lines
    seen.after_stop = half_written(seen.models)
    # What a run killed outright (SIGKILL, power cut) would leave: a staged copy, never to be read as a model.
    target = default_model_dir(seen.models, available_names(NlpSettings(models_dir=seen.models)))
    seen.planted = seen.models / f".{target.name}.tmp-killed"
    seen.planted.mkdir()
    (seen.planted / "model.joblib").write_bytes(b"half a file")

    # 2. `serve nlp` on it: it prepares in the background; a second `supportbot prepare` comes meanwhile.
    port = free_port()
    nlp = spawn(["serve", "nlp", "--port", str(port)], seen.env, root / "nlp.log")
    second: subprocess.Popen[str] | None = None
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            assert nlp.poll() is None, (root / "nlp.log").read_text()[-3000:]
            try:
                code, body = readiness(port)
            except httpx.HTTPError:
                time.sleep(0.2)
                continue
            seen.readiness.append((code, body))
            if code == 200:
                break
            seen.healthz_while_preparing.append(httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=3).status_code)
            if seen.analyze_before is None:
                seen.analyze_before = httpx.post(f"http://127.0.0.1:{port}/v1/analyze", json={"text": "hello"},
                                                 headers=SERVICE_HEADERS)
                seen.embed_before = httpx.post(f"http://127.0.0.1:{port}/v1/embed", json={"texts": ["hello"]},
                                               headers=SERVICE_HEADERS)
            if second is None and body["progress"]["step"].startswith(TRAINING):
                seen.second_waited_on = next(iter(children(nlp.pid)), None)
                second = subprocess.Popen([sys.executable, "-m", "supportbot.cli", "prepare"], env=seen.env,
                                          cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            time.sleep(0.5)
        seen.analyze_after = httpx.post(f"http://127.0.0.1:{port}/v1/analyze",
                                        json={"text": "where is my order ORD-12345?"}, timeout=30,
                                        headers=SERVICE_HEADERS)
        if second is not None:
            out, err = second.communicate(timeout=300)
            seen.second = subprocess.CompletedProcess(second.args, second.returncode, out, err)
    finally:
        for process in (nlp, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
    yield seen


def test_sigterm_mid_training_stops_prepare_within_10_s_keeping_nothing_half_written(scenario: Scenario) -> None:
    code, seconds = scenario.prepare_stop
    assert code == 128 + signal.SIGTERM, (scenario.logs / "prepare.log").read_text()[-2000:]
    assert seconds < STOP_LIMIT_S
    assert scenario.after_stop == []  # no model, nothing staged
    assert "stopped by SIGTERM" in (scenario.logs / "prepare.log").read_text()
    fractions = [line["fraction"] for line in scenario.prepare_lines]
    assert fractions == sorted(fractions) and 0 < fractions[-1] < 1


def test_nlp_prepares_an_unprepared_directory_in_the_background(scenario: Scenario) -> None:
    """The next start completes the preparation: /healthz answers all along, /readyz says how far it is, the
    model routes answer 503 until the models are loaded, and a staged leftover is cleared, never read."""
    assert scenario.healthz_while_preparing and set(scenario.healthz_while_preparing) == {200}
    preparing = [body for code, body in scenario.readiness if code == 503]
    assert {body["status"] for body in preparing} == {"preparing"}
    fractions = [body["progress"]["fraction"] for body in preparing]
    assert fractions == sorted(fractions) and len(set(fractions)) >= 3  # it rises
    steps = [body["progress"]["step"] for body in preparing]
    assert any(step.startswith(TRAINING) for step in steps) and steps[-1] == "loading"
    assert scenario.readiness[-1][0] == 200 and scenario.readiness[-1][1]["status"] == "ok"
    for before in (scenario.analyze_before, scenario.embed_before):
        assert before is not None and before.status_code == 503 and "Retry-After" in before.headers
        assert "not ready yet" in before.json()["error"]["message"]
    assert scenario.analyze_after is not None and scenario.analyze_after.status_code == 200
    assert scenario.analyze_after.json()["intent"]["name"] == "order_status"
    assert scenario.planted is not None and not scenario.planted.exists()
    assert half_written(scenario.models) == [default_model_dir(
        scenario.models, available_names(NlpSettings(models_dir=scenario.models))).name]


def test_a_second_prepare_waits_for_the_first_and_finds_the_work_done(scenario: Scenario) -> None:
    second = scenario.second
    assert second is not None and second.returncode == 0, second
    assert f"waiting for another preparation (pid {scenario.second_waited_on})" in second.stderr
    assert "another run prepared it meanwhile" in second.stderr and "nothing to do" in second.stderr


def test_a_prepared_directory_is_a_no_op_that_writes_nothing(scenario: Scenario, shared_encoder_dir: Path) -> None:
    assert missing(NlpSettings(data_dir=scenario.state, models_dir=scenario.models)) == []
    before = snapshot(scenario.models, shared_encoder_dir)
    third = subprocess.run([sys.executable, "-m", "supportbot.cli", "prepare"], env=scenario.env, cwd=REPO,
                           capture_output=True, text=True, timeout=60)
    assert third.returncode == 0 and "already prepared" in third.stderr and "nothing to do" in third.stderr
    assert snapshot(scenario.models, shared_encoder_dir) == before


def test_serving_prepared_models_imports_no_torch_and_writes_nothing(scenario: Scenario,
                                                                     shared_encoder_dir: Path) -> None:
    script = f"""
import asyncio, json, sys
from pathlib import Path
from services.nlp.app import create_app
from supportbot.settings import NlpSettings

app = create_app(NlpSettings(data_dir=Path({str(scenario.state)!r}), models_dir=Path({str(scenario.models)!r})))

async def main():
    async with app.router.lifespan_context(app):
        progress = await app.state.preparation.wait(timeout_s=300)
        print(json.dumps({{"progress": progress.model_dump(), "ready": app.state.analyzer is not None,
                          "heavy": sorted(set(sys.modules) & {{"torch", "transformers"}})}}))

asyncio.run(main())
"""
    before = snapshot(scenario.models, shared_encoder_dir)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=scenario.env)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["ready"] and result["progress"]["done"], result
    assert result["heavy"] == []
    assert snapshot(scenario.models, shared_encoder_dir) == before


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_nlp_stopped_mid_preparation_ends_its_preparation(sig: int, tmp_path: Path) -> None:
    """SIGTERM: nlp exits within 10 s, its preparation first. SIGKILL: the preparation ends with it anyway."""
    models = tmp_path / "models"
    port = free_port()
    nlp = spawn(["serve", "nlp", "--port", str(port)], env_for(tmp_path / "state", models), tmp_path / "nlp.log")
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            assert nlp.poll() is None, (tmp_path / "nlp.log").read_text()[-3000:]
            try:
                code, body = readiness(port)
            except httpx.HTTPError:
                code, body = 0, {}
            if code == 503 and body["progress"]["step"].startswith(TRAINING):
                break
            time.sleep(0.3)
        preparation = children(nlp.pid)
        assert len(preparation) == 1, preparation
        code, seconds = stop(nlp, sig)
    finally:
        if nlp.poll() is None:
            nlp.kill()
    if sig == signal.SIGTERM:
        # uvicorn shuts down gracefully, then dies of the signal it caught, as the default action would.
        assert seconds < STOP_LIMIT_S and code in (0, -signal.SIGTERM), (tmp_path / "nlp.log").read_text()[-3000:]
        assert not alive(preparation[0])
    else:
        deadline = time.monotonic() + STOP_LIMIT_S
        while alive(preparation[0]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(preparation[0])
    assert half_written(models) == []


def test_sigterm_during_the_encoder_export_stops_within_10_s(tmp_path: Path) -> None:
    """Inside torch's ONNX export, which has no checkpoint: the signal interrupts it, and nothing is kept."""
    env = {k: v for k, v in env_for(tmp_path / "state", tmp_path / "models").items() if k != "NLP_ENCODER_DIR"}
    with (tmp_path / "prepare.log").open("wb") as log:
        run = JsonLines(env, log)
        try:
            run.wait_for("exporting the sentence encoder (exporting MiniLM to ONNX", timeout_s=300)
            time.sleep(0.5)
            code, seconds = stop(run.process, signal.SIGTERM)
        finally:
            run.process.kill()
    assert code == 128 + signal.SIGTERM and seconds < STOP_LIMIT_S
    encoders = tmp_path / "models" / "encoders"
    assert [p.name for p in encoders.iterdir() if not p.name.endswith(".lock")] == []


def test_a_failed_preparation_is_a_clear_exit_code_and_a_failed_readiness(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "models"
    not_a_dir.write_text("a file where the models directory should be")
    env = {**env_for(tmp_path / "state", not_a_dir), "NLP_ENCODER_DIR": str(tmp_path / "encoder")}
    failed = subprocess.run([sys.executable, "-m", "supportbot.cli", "prepare"], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1 and f"cannot write to {not_a_dir}" in failed.stderr, failed.stderr
    port = free_port()
    nlp = spawn(["serve", "nlp", "--port", str(port)], env, tmp_path / "nlp.log")
    try:
        deadline = time.monotonic() + 300
        body: dict[str, Any] = {}
        while time.monotonic() < deadline and body.get("status") != "failed":
            assert nlp.poll() is None, (tmp_path / "nlp.log").read_text()[-3000:]
            try:
                body = readiness(port)[1]
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        assert body["status"] == "failed" and "cannot write to" in body["progress"]["error"], body
        analyze = httpx.post(f"http://127.0.0.1:{port}/v1/analyze", json={"text": "hello"}, headers=SERVICE_HEADERS)
        assert analyze.status_code == 503 and "could not be prepared" in analyze.json()["error"]["message"]
    finally:
        nlp.terminate()
        nlp.wait(timeout=30)
    assert "nlp models could not be prepared" in (tmp_path / "nlp.log").read_text()


def test_with_nlp_model_dir_no_default_model_is_trained(tmp_path: Path, shared_encoder_dir: Path) -> None:
    models = tmp_path / "models"
    unprepared = NlpSettings(data_dir=tmp_path / "state", models_dir=models)
    default = default_model_dir(models, available_names(unprepared))
    assert missing(unprepared) == [f"the default intent model ({default})"]
    model_dir = tmp_path / "served-model"  # `intents train --out`: the model to serve instead of the default
    assert missing(unprepared.model_copy(update={"model_dir": model_dir})) == []
    done = subprocess.run([sys.executable, "-m", "supportbot.cli", "prepare"], cwd=REPO, capture_output=True,
                          text=True, timeout=60, env={**env_for(tmp_path / "state", models),
                                                      "NLP_MODEL_DIR": str(model_dir)})
    assert done.returncode == 0 and "nothing to do" in done.stderr, done.stderr
    assert not models.exists()
