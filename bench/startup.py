"""Start-up of `supportbot up`: time to ready and peak memory of each service, from an empty data directory
(nlp exports the sentence encoder and trains the default intents in the background) and from a prepared one.

Each start runs `supportbot up` on free loopback ports with the embedded defaults (SQLite, in-process cache,
offline LLM), reads each service's `/readyz` every 0.2 s (the first 200 is its time to ready) and each
process's VmHWM (peak resident memory) from /proc: a service's own process and, apart, the largest of its
children's and their children's (nlp's preparation process), sampled until they exit. Then SIGINT, and the
time until every process is gone. Linux only (/proc).

    python bench/startup.py [--prepared-runs 2] [--timeout 900] [--keep DIR]

Nothing shared is reused: NLP_ENCODER_DIR and SUPPORTBOT_MODELS_DIR are left out of the services'
environment, so "empty" pays the whole preparation.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from supportbot.runner import OFFSETS, SERVICE_ORDER  # noqa: E402

SAMPLE_S = 0.2


@dataclass
class Start:
    """One `supportbot up`: when each service was first ready, and its processes' peaks (kB)."""

    label: str
    ready_s: dict[str, float] = field(default_factory=dict)
    up_s: float | None = None
    stop_s: float | None = None
    own_hwm_kb: dict[str, int] = field(default_factory=dict)
    children_hwm_kb: dict[str, int] = field(default_factory=dict)
    exit_code: int | None = None


def free_port_block(size: int) -> int:
    """A base port whose next `size` ports are free right now."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base + size > 65535:
            continue
        try:
            for port in range(base, base + size):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free block of ports")


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return None


def process_table() -> dict[int, int]:
    """pid → parent pid of every running process."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) and fields[0] != "Z":
            table[int(entry.name)] = int(fields[1])
    return table


def vm_hwm_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def service_of(pid: int) -> str | None:
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    return args[args.index(b"serve") + 1].decode() if b"serve" in args else None


def sample_memory(up_pid: int, start: Start, seen_children: dict[int, tuple[str, int]]) -> None:
    """One pass over `up`'s process tree: each service's own VmHWM, and its descendants' (kept by pid, so a
    preparation process that has exited still counts with its last reading)."""
    table = process_table()
    kids: dict[int, list[int]] = {}
    for pid, parent in table.items():
        kids.setdefault(parent, []).append(pid)
    for service_pid in kids.get(up_pid, []):
        name = service_of(service_pid)
        if name is None:
            continue
        if (hwm := vm_hwm_kb(service_pid)) is not None:
            start.own_hwm_kb[name] = max(start.own_hwm_kb.get(name, 0), hwm)
        frontier = list(kids.get(service_pid, []))
        while frontier:
            pid = frontier.pop()
            frontier.extend(kids.get(pid, []))
            if (hwm := vm_hwm_kb(pid)) is not None:
                seen_children[pid] = (name, max(hwm, seen_children.get(pid, (name, 0))[1]))
    for name, hwm in seen_children.values():
        start.children_hwm_kb[name] = max(start.children_hwm_kb.get(name, 0), hwm)


def run_start(label: str, data_dir: Path, timeout_s: float, log_path: Path) -> Start:
    base = free_port_block(4)
    env = {key: value for key, value in os.environ.items()
           if key not in {"NLP_ENCODER_DIR", "SUPPORTBOT_MODELS_DIR", "DATABASE_URL", "REDIS_URL",
                          "OPENAI_API_KEY", "OPENAI_BASE_URL"}}
    env.update(SUPPORTBOT_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1")
    start = Start(label)
    seen_children: dict[int, tuple[str, int]] = {}
    with log_path.open("wb") as log:
        began = time.monotonic()
        process = subprocess.Popen([sys.executable, "-m", "supportbot.cli", "up", "--base-port", str(base)],
                                   env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        try:
            with httpx.Client(timeout=5) as client:
                while time.monotonic() - began < timeout_s and process.poll() is None:
                    sample_memory(process.pid, start, seen_children)
                    for name in SERVICE_ORDER:
                        if name in start.ready_s:
                            continue
                        try:
                            if client.get(f"http://127.0.0.1:{base + OFFSETS[name]}/readyz").status_code == 200:
                                start.ready_s[name] = time.monotonic() - began
                        except httpx.HTTPError:
                            pass
                    if start.up_s is None and "supportbot is up" in log_path.read_text(errors="replace"):
                        start.up_s = time.monotonic() - began
                    if start.up_s is not None and len(start.ready_s) == len(SERVICE_ORDER):
                        break
                    time.sleep(SAMPLE_S)
            sample_memory(process.pid, start, seen_children)
        finally:
            stopping = time.monotonic()
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            start.stop_s = time.monotonic() - stopping
            start.exit_code = process.returncode
    return start


def _mb(kb: int | None) -> str:
    return f"{kb / 1024:.0f}" if kb else "-"


def _s(value: float | None) -> str:
    return f"{value:.1f}" if value is not None else "not ready"


def table(starts: list[Start]) -> str:
    rows = ["| start | service | ready after (s) | VmHWM, its process (MB) | VmHWM, largest child (MB) |",
            "|---|---|---|---|---|"]
    for start in starts:
        for name in SERVICE_ORDER:
            rows.append(f"| {start.label} | {name} | {_s(start.ready_s.get(name))} | "
                        f"{_mb(start.own_hwm_kb.get(name))} | {_mb(start.children_hwm_kb.get(name))} |")
        rows.append(f"| {start.label} | **all four (\"is up\")** | **{_s(start.up_s)}** | | |")
    return "\n".join(rows)


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown CPU")
    memory_kb = int(Path("/proc/meminfo").read_text().split()[1])
    load = os.getloadavg()
    return (f"{cpu}, {os.cpu_count()} cores, {memory_kb / 1024 / 1024:.0f} GiB; Python {platform.python_version()}; "
            f"load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prepared-runs", type=int, default=2, help="starts on the prepared directory")
    parser.add_argument("--timeout", type=float, default=900.0, help="longest wait for one start, in seconds")
    parser.add_argument("--keep", type=Path, default=None, help="data directory to use and keep (default: a "
                                                                "temporary one, removed at the end)")
    args = parser.parse_args()
    if not Path("/proc/self/status").exists():
        print("bench/startup.py reads /proc: Linux only", file=sys.stderr)
        return 2
    data_dir = args.keep or Path(tempfile.mkdtemp(prefix="sb-startup-"))
    if args.keep and any(args.keep.iterdir() if args.keep.exists() else ()):
        print(f"{args.keep} is not empty: the first start must be from an empty data directory", file=sys.stderr)
        return 2
    logs = Path(tempfile.mkdtemp(prefix="sb-startup-logs-"))
    print(f"load average at the start {' '.join(f'{x:.2f}' for x in os.getloadavg())}; logs in {logs}",
          file=sys.stderr)
    try:
        starts = [run_start("empty", data_dir, args.timeout, logs / "empty.log")]
        print(f"empty: is up after {_s(starts[0].up_s)} s", file=sys.stderr)
        for run in range(args.prepared_runs):
            starts.append(run_start("prepared", data_dir, args.timeout, logs / f"prepared-{run}.log"))
            print(f"prepared #{run + 1}: is up after {_s(starts[-1].up_s)} s", file=sys.stderr)
    finally:
        if args.keep is None:
            shutil.rmtree(data_dir, ignore_errors=True)
    print(table(starts))
    prepared = [start.up_s for start in starts[1:] if start.up_s is not None]
    if prepared:
        print(f"\nprepared: median is up after {statistics.median(prepared):.1f} s over {len(prepared)} starts")
    print("stop (SIGINT until up has exited, every process gone): " + ", ".join(f"{start.label} {_s(start.stop_s)} s" for start in starts))
    print(machine())
    return 0 if all(start.up_s is not None for start in starts) else 1


if __name__ == "__main__":
    sys.exit(main())
