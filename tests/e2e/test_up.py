"""`supportbot up` as a user and an operator meet it: a first start that waits on progress, a supervisor that
restarts what dies, and a stop that leaves nothing behind.

Real processes on free loopback ports. The supervisor's own rules (give up on a crash loop, give up on no
progress but never on slow progress, SIGKILL what ignores SIGTERM) run against stand-in services, small
HTTP servers that answer `/readyz` as told: they take milliseconds to start, where a real service takes
seconds. The real services are started for what only they can show: a first start that prepares the models
under load, and nlp killed under a running system.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from supportbot.processes import live_groups
from supportbot.runner import OFFSETS
from tests.helpers import REPO, free_port_block

pytestmark = pytest.mark.e2e
API_KEY = "sb_up_test_key_abcdefghijklmnop"
STOP_LIMIT_S = 10.0  # the bound: SIGINT or SIGTERM to `up` stops everything within 10 s

# A service stand-in: `python standin.py MODE PORT PIDFILE`.
STANDIN = r'''
import json, os, signal, subprocess, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

mode, port, pidfile = sys.argv[1], int(sys.argv[2]), sys.argv[3]
pids = [os.getpid()]
if mode == "crash":
    print("Traceback (most recent call last):\n  File \"x\", line 1\nRuntimeError: a bad setting", file=sys.stderr)
    sys.exit(3)
if mode == "stubborn":  # ignores SIGTERM, and so does the helper process it starts in its group
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    helper = subprocess.Popen([sys.executable, "-c",
                               "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"])
    pids.append(helper.pid)
with open(pidfile, "a") as handle:
    handle.write(" ".join(map(str, pids)) + "\n")
started = time.monotonic()

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        elapsed = time.monotonic() - started
        code, body = 200, {"status": "ok", "service": mode}
        if mode == "stuck":
            code, body = 503, {"status": "preparing", "progress": {"step": "training", "fraction": 0.5}}
        elif mode == "fails":
            code, body = 503, {"status": "failed", "progress": {"step": "training", "fraction": 0.3,
                                                                 "error": "no space left on device"}}
        elif mode == "slow" and elapsed < 6:  # six seconds of preparation, moving at every poll
            code, body = 503, {"status": "preparing", "progress": {"step": "training", "fraction": round(elapsed / 6, 2)}}
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
'''

RUN_STANDINS = (
    "import json, sys\n"
    "from supportbot.runner import run_all\n"
    "sys.exit(run_all(host='127.0.0.1', base_port=int(sys.argv[1]), ready_timeout_s=float(sys.argv[2]),\n"
    "                 commands=json.loads(sys.argv[3]), on_ready=lambda: print('READY', flush=True)))\n"
)

# Keeps one core busy for at most ARGV[1] seconds.
BURN = "import sys, time\nend = time.monotonic() + float(sys.argv[1])\nwhile time.monotonic() < end:\n    pass\n"


# --- processes, read from /proc ----------------------------------------------------------------------------

def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[-1].split()  # state, ppid, pgrp, ...


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields and int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    frontier = [pid]
    while frontier:
        for child in children(frontier.pop()):
            if child not in found:
                found.add(child)
                frontier.append(child)
    return found


def running(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def group_of(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[2]) if fields else None


def service_pids(up_pid: int) -> dict[str, int]:
    """The pid of each service `up` runs, by name, from the children's command lines."""
    pids = {}
    for child in children(up_pid):
        try:
            args = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in args:
            pids[args[args.index(b"serve") + 1].decode()] = child
    return pids


def wait_for(condition: object, timeout_s: float, what: str, interval_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(interval_s)
    raise AssertionError(f"not within {timeout_s} s: {what}")


def stop_within_limit(process: subprocess.Popen[bytes], sig: signal.Signals, groups: set[int]) -> int:
    """Send `sig` to `up`; assert it and every process of `groups` are gone within 10 s; its exit code."""
    sent = time.monotonic()
    process.send_signal(sig)
    code = process.wait(timeout=STOP_LIMIT_S)
    left = STOP_LIMIT_S - (time.monotonic() - sent)
    wait_for(lambda: not live_groups(groups), max(0.1, left), f"process groups {groups} gone")
    return code


def kill_all(process: subprocess.Popen[bytes], groups: set[int]) -> None:
    """Clean-up after a failed assertion: nothing may outlive the test (a restarted service has a new group)."""
    groups = groups | all_groups(process.pid) if process.poll() is None else groups
    if process.poll() is None:
        process.kill()
        process.wait()
    for pgid in live_groups(groups):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# --- the supervisor's rules, against stand-ins ----------------------------------------------------------------

def run_standins(tmp_path: Path, modes: dict[str, str], ready_timeout_s: float) -> tuple[subprocess.Popen[bytes],
                                                                                            Path, Path, int]:
    script = tmp_path / "standin.py"
    script.write_text(STANDIN)
    pidfile = tmp_path / "pids"
    base = free_port_block(4)
    commands = {name: [sys.executable, str(script), modes.get(name, "ok"), str(base + OFFSETS[name]), str(pidfile)]
                for name in OFFSETS}
    log_path = tmp_path / "up.log"
    process = subprocess.Popen([sys.executable, "-c", RUN_STANDINS, str(base), str(ready_timeout_s),
                                json.dumps(commands)], stdout=log_path.open("wb"), stderr=subprocess.STDOUT, cwd=REPO)
    return process, log_path, pidfile, base


def recorded_pids(pidfile: Path) -> set[int]:
    if not pidfile.exists():
        return set()
    return {int(pid) for line in pidfile.read_text().splitlines() for pid in line.split()}


def test_a_service_that_keeps_dying_before_it_is_ready_gives_up_with_its_code_and_reason(tmp_path: Path) -> None:
    process, log_path, pidfile, _ = run_standins(tmp_path, {"llm": "crash"}, ready_timeout_s=60)
    try:
        code = process.wait(timeout=60)
        output = log_path.read_text()
        assert code == 3, output  # the service's own exit code
        restarts = [line for line in output.splitlines() if line.startswith("supportbot: llm (pid ")]
        # Four restarts with a doubling backoff, then the fifth death is the last.
        assert [line.rsplit("in ", 1)[1] for line in restarts] == ["0.5 s", "1 s", "2 s", "4 s"], output
        assert all("exited with code 3: RuntimeError: a bad setting" in line for line in restarts)
        assert ("supportbot: llm exited with code 3 before it became ready, 5 times in a row; giving up: "
                "RuntimeError: a bad setting") in output
        assert "READY" not in output and "is up" not in output
        # The others were stopped with it.
        assert not live_groups(recorded_pids(pidfile))
    finally:
        kill_all(process, recorded_pids(pidfile))


def test_a_failed_preparation_is_started_over_a_bounded_number_of_times(tmp_path: Path) -> None:
    process, log_path, pidfile, _ = run_standins(tmp_path, {"nlp": "fails"}, ready_timeout_s=60)
    try:
        assert process.wait(timeout=60) == 1  # the service did not exit by itself: up stopped it
        output = log_path.read_text()
        assert output.count("supportbot: nlp: its preparation failed: no space left on device; stopping it") == 5
        assert ("supportbot: nlp was killed by SIGTERM before it became ready, 5 times in a row; giving up: "
                "its preparation failed: no space left on device") in output, output
        assert "READY" not in output
        assert not live_groups(recorded_pids(pidfile))
    finally:
        kill_all(process, recorded_pids(pidfile))


def test_up_gives_up_on_no_progress_but_waits_on_slow_progress(tmp_path: Path) -> None:
    (tmp_path / "stuck").mkdir()
    (tmp_path / "slow").mkdir()
    stuck, stuck_log, stuck_pids, _ = run_standins(tmp_path / "stuck", {"nlp": "stuck"}, ready_timeout_s=2)
    slow, slow_log, slow_pids, _ = run_standins(tmp_path / "slow", {"nlp": "slow"}, ready_timeout_s=2)
    try:
        assert stuck.wait(timeout=30) == 1
        output = stuck_log.read_text()
        assert "no progress for 2 s (--ready-timeout): nlp preparing (training, 50%); stopping" in output, output
        assert "READY" not in output

        # Six seconds of preparation, three times the timeout, but it moves: `up` waits and comes up.
        wait_for(lambda: "READY" in slow_log.read_text(), 30, "the slow stand-in ready")
        output = slow_log.read_text()
        assert "supportbot: nlp: preparing (training, " in output, output
        assert output.index("supportbot: nlp: ok") < output.index("supportbot is up") < output.index("READY")
        assert stop_within_limit(slow, signal.SIGINT, recorded_pids(slow_pids)) == 0
    finally:
        kill_all(stuck, recorded_pids(stuck_pids))
        kill_all(slow, recorded_pids(slow_pids))


def test_sigterm_stops_everything_within_10_s_even_what_ignores_sigterm(tmp_path: Path) -> None:
    process, log_path, pidfile, _ = run_standins(tmp_path, {"nlp": "stubborn"}, ready_timeout_s=60)
    try:
        wait_for(lambda: "READY" in log_path.read_text(), 30, "stand-ins ready")
        pids = recorded_pids(pidfile)
        assert len(pids) == 5  # four services and the stubborn one's helper, in its group
        groups = {group_of(pid) for pid in pids} - {None}
        assert stop_within_limit(process, signal.SIGTERM, groups) == 0  # type: ignore[arg-type]
        assert not any(running(pid) for pid in pids)
    finally:
        kill_all(process, recorded_pids(pidfile))


def test_up_refuses_ports_already_in_use(tmp_path: Path) -> None:
    """Another server there would answer the readiness polls for a service that never started."""
    script = tmp_path / "standin.py"
    script.write_text(STANDIN)
    base = free_port_block(4)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", base + OFFSETS["llm"]))
        holder.listen()
        commands = {name: [sys.executable, str(script), "ok", str(base + OFFSETS[name]), str(tmp_path / "pids")]
                    for name in OFFSETS}
        result = subprocess.run([sys.executable, "-c", RUN_STANDINS, str(base), "60", json.dumps(commands)],
                                capture_output=True, text=True, timeout=30, cwd=REPO)
    assert result.returncode == 1
    assert f"supportbot: ports in use: llm :{base + OFFSETS['llm']}; stop what holds them" in result.stderr
    assert not (tmp_path / "pids").exists()  # nothing was started


def test_services_do_not_outlive_a_killed_up(tmp_path: Path) -> None:
    """SIGKILL leaves `up` no chance to stop them: the kernel tells them (Linux's parent-death signal)."""
    process, log_path, pidfile, _ = run_standins(tmp_path, {}, ready_timeout_s=60)
    try:
        wait_for(lambda: "READY" in log_path.read_text(), 30, "stand-ins ready")
        pids = recorded_pids(pidfile)
        assert len(pids) == 4
        process.kill()
        process.wait()
        wait_for(lambda: not any(running(pid) for pid in pids), STOP_LIMIT_S, "every service gone")
    finally:
        kill_all(process, recorded_pids(pidfile))


# --- the real services --------------------------------------------------------------------------------------

def up_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if key not in {"DATABASE_URL", "REDIS_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL", "SUPPORTBOT_MODELS_DIR"}}
    return {**env, "SUPPORTBOT_DATA_DIR": str(tmp_path / "state"), "SUPPORTBOT_BOOTSTRAP_API_KEY": API_KEY,
            "PYTHONUNBUFFERED": "1", **extra}


def start_up(tmp_path: Path, env: dict[str, str], base: int, name: str) -> tuple[subprocess.Popen[bytes], Path]:
    """`supportbot up` in exactly `env`, its stdout and stderr in one file (in the order written)."""
    log_path = tmp_path / f"{name}.log"
    process = subprocess.Popen([sys.executable, "-m", "supportbot.cli", "up", "--base-port", str(base)], env=env,
                               stdout=log_path.open("wb"), stderr=subprocess.STDOUT, cwd=REPO)
    return process, log_path


def wait_until_up(process: subprocess.Popen[bytes], log_path: Path, timeout_s: float) -> str:
    """Wait for "supportbot is up"; fail early if `up` exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        output = log_path.read_text(errors="replace")
        if "supportbot is up" in output:
            return output
        if process.poll() is not None:
            raise AssertionError(f"up exited with {process.returncode} before it was up:\n{_status_lines(output)}")
        time.sleep(0.5)
    raise AssertionError(f"not up within {timeout_s} s:\n{_status_lines(log_path.read_text(errors='replace'))}")


def _status_lines(output: str) -> str:
    """What `up` itself said (the services' JSON logs left out)."""
    return "\n".join(line for line in output.splitlines() if not line.startswith("{"))[-4000:]


def readyz(base: int, name: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{base + OFFSETS[name]}/readyz", timeout=10)


def ready(base: int, name: str) -> bool:
    try:
        return readyz(base, name).status_code == 200
    except httpx.TransportError:
        return False


def all_groups(up_pid: int) -> set[int]:
    return {pgid for pid in descendants(up_pid) if (pgid := group_of(pid)) is not None and pgid != os.getpgrp()}


@pytest.fixture
def burn_both_cores() -> Iterator[None]:
    """Two CPU-bound processes, bounded in time and killed at the end, as on a machine with other work on it."""
    burners = [subprocess.Popen([sys.executable, "-c", BURN, "1200"]) for _ in range(2)]
    try:
        yield
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


@pytest.mark.usefixtures("burn_both_cores")
def test_first_start_on_a_fresh_directory_under_load(tmp_path: Path) -> None:
    """Nothing prepared, no shared encoder: an interrupted first start leaves nothing half-written, the next
    one finishes the preparation and answers, and the one after that is ready in seconds."""
    env = up_env(tmp_path)
    env.pop("NLP_ENCODER_DIR", None)  # (the session's shared encoder, in os.environ: tests/conftest.py)
    env.pop("SUPPORTBOT_BOOTSTRAP_API_KEY")  # `up` makes the demo key, and must show it once
    models = tmp_path / "state" / "models"
    base = free_port_block(4)

    # 1. SIGTERM in the middle of nlp's preparation.
    first, first_log = start_up(tmp_path, env, base, "first")
    groups: set[int] = set()
    try:
        def preparing() -> bool:
            """nlp's preparation process has begun its first step (the encoder's export, torch loaded)."""
            try:
                body = readyz(base, "nlp").json()
            except (httpx.HTTPError, ValueError):
                return False
            return body.get("status") == "preparing" and body["progress"]["step"] not in ("starting", "loading")

        wait_for(preparing, 300, "nlp preparing", interval_s=0.5)
        time.sleep(3)  # into that step: artefacts being staged
        groups = all_groups(first.pid)
        assert len(groups) >= 4, groups
        assert stop_within_limit(first, signal.SIGTERM, groups) == 0
    finally:
        kill_all(first, groups)
    output = first_log.read_text(errors="replace")
    assert "supportbot is up" not in output and "Try: curl" not in output
    # The demo tenant exists from now on: its key is printed although the system never came up.
    keys = re.findall(r"shown only this once:\n\n    (sb_\S+)\n", output)
    assert len(keys) == 1, _status_lines(output)
    key = keys[0]
    half_written = [str(path) for path in models.rglob("*") if ".tmp" in path.name] if models.exists() else []
    assert not half_written

    # 2. The next start completes the preparation, announces only when all four are ready, answers a turn.
    second, second_log = start_up(tmp_path, env, base, "second")
    groups = set()
    try:
        output = wait_until_up(second, second_log, 900)
        for name in OFFSETS:  # "is up" was printed with every service ready
            assert readyz(base, name).status_code == 200, name
        steps = set(re.findall(r"supportbot: nlp: preparing \(([^,)]+)", _status_lines(output)))
        assert steps - {"starting", "loading"}, steps  # it did prepare, in this start
        wait_for(lambda: "Try: curl" in second_log.read_text(errors="replace"), 10, "the Try line")
        output = second_log.read_text(errors="replace")
        assert output.index("supportbot is up") < output.index("Try: curl")
        assert key not in output and "shown only this once" not in output  # shown once, at the first start
        assert 'Authorization: Bearer $KEY"' in output
        auth = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{base}", timeout=60) as client:
            conversation = client.post("/v1/conversations", headers=auth).raise_for_status()
            turn = client.post(f"/v1/conversations/{conversation.json()['id']}/messages", headers=auth,
                               json={"text": "How can I return an item?"})
        assert turn.status_code == 200, turn.text
        assert turn.json()["reply"]["text"] and not turn.json().get("degraded")
        groups = all_groups(second.pid)
        assert stop_within_limit(second, signal.SIGINT, groups) == 0
    finally:
        kill_all(second, groups)
    assert not [path for path in models.rglob("*") if ".tmp" in path.name]

    # 3. Everything is prepared now: the third start loads it and prepares nothing.
    third, third_log = start_up(tmp_path, env, base, "third")
    groups = set()
    try:
        started = time.monotonic()
        output = wait_until_up(third, third_log, 120)
        assert time.monotonic() - started < 60, "a start on a prepared directory takes seconds, not minutes"
        # nlp's /readyz says "preparing" while it loads too, but names no step of a preparation.
        steps = set(re.findall(r"supportbot: nlp: preparing \(([^,)]+)", _status_lines(output)))
        assert steps <= {"starting", "loading"}, steps
        groups = all_groups(third.pid)
        assert stop_within_limit(third, signal.SIGTERM, groups) == 0
    finally:
        kill_all(third, groups)


def test_nlp_killed_under_up_is_restarted_while_the_others_answer_degraded(tmp_path: Path,
                                                                          model_cache_dir: Path) -> None:
    # The session's prepared intent model, where nlp looks for it (the encoder comes from NLP_ENCODER_DIR),
    # as the `system` fixture of test_system.py does: preparation is the test above's.
    from services.nlp.classifier import load_or_train_default

    load_or_train_default(model_cache_dir)
    for cached in model_cache_dir.glob("default-*"):
        if ".tmp" not in cached.name:
            shutil.copytree(cached, tmp_path / "state" / "models" / cached.name)
    base = free_port_block(4)
    process, log_path = start_up(tmp_path, up_env(tmp_path), base, "up")
    groups: set[int] = set()
    try:
        wait_until_up(process, log_path, 180)
        groups = all_groups(process.pid)
        before = service_pids(process.pid)
        assert set(before) == set(OFFSETS)
        auth = {"Authorization": f"Bearer {API_KEY}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{base}", headers=auth, timeout=30) as client:
            conversation_id = client.post("/v1/conversations").json()["id"]

            def turn() -> httpx.Response:
                return client.post(f"/v1/conversations/{conversation_id}/messages",
                                   json={"text": "How long does shipping take?"})

            assert turn().json().get("degraded") is False

            os.kill(before["nlp"], signal.SIGKILL)
            answers: list[httpx.Response] = []
            others: list[int] = []
            deadline = time.monotonic() + 120
            back = False
            while time.monotonic() < deadline and not back:
                answers.append(turn())
                for name in ("gateway", "dialogue", "llm"):
                    others.append(httpx.get(f"http://127.0.0.1:{base + OFFSETS[name]}/healthz", timeout=10)
                                  .status_code)
                now = service_pids(process.pid)
                back = now.get("nlp") not in (None, before["nlp"]) and ready(base, "nlp")
                time.sleep(0.2)
            assert back, _status_lines(log_path.read_text(errors="replace"))
            # Dialogue skips a failed nlp for a few seconds before it asks again: whole answers within 30 s.
            recovered: list[httpx.Response] = []
            wait_for(lambda: recovered.append(turn()) or recovered[-1].json().get("degraded") is False, 30,
                     "a turn answered with nlp again", interval_s=0.5)

        assert [answer.status_code for answer in answers] == [200] * len(answers)
        degraded = [answer.json() for answer in answers if answer.json().get("degraded")]
        assert degraded, "no turn was answered while nlp was down"
        assert all(any(reason.startswith("nlp_") for reason in body["degraded_reasons"]) for body in degraded)
        assert all(body["reply"]["text"] for body in degraded)
        assert [answer.status_code for answer in recovered] == [200] * len(recovered)
        assert others == [200] * len(others)
        now = service_pids(process.pid)
        assert {name: now[name] for name in ("gateway", "dialogue", "llm")} == \
               {name: before[name] for name in ("gateway", "dialogue", "llm")}
        output = log_path.read_text(errors="replace")
        assert f"supportbot: nlp (pid {before['nlp']}) was killed by SIGKILL; restart 1 in 0.5 s" in output
        assert f"supportbot: nlp restarted (pid {now['nlp']}, restart 1)" in output
        assert process.poll() is None
        groups = all_groups(process.pid)
        assert stop_within_limit(process, signal.SIGINT, groups) == 0
    finally:
        kill_all(process, groups)
