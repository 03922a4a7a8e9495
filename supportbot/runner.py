"""`supportbot up`: run the four services as child processes, stop them all together."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

SERVICE_ORDER = ("nlp", "llm", "dialogue", "gateway")
OFFSETS = {"gateway": 0, "nlp": 1, "dialogue": 2, "llm": 3}


@dataclass
class Child:
    name: str
    port: int
    process: subprocess.Popen[bytes]


def service_env(base_env: dict[str, str], host: str, base_port: int) -> dict[str, str]:
    """The environment that points each service at its siblings on `base_port`..`base_port+3`."""
    env = dict(base_env)
    env["NLP_URL"] = f"http://{host}:{base_port + OFFSETS['nlp']}"
    env["DIALOGUE_URL"] = f"http://{host}:{base_port + OFFSETS['dialogue']}"
    env["LLM_URL"] = f"http://{host}:{base_port + OFFSETS['llm']}"
    return env


def wait_ready(url: str, timeout_s: float, process: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    return False


def stop_all(children: list[Child], grace_s: float = 10.0) -> None:
    """SIGTERM every child (uvicorn drains in-flight requests), then SIGKILL what is left after `grace_s`."""
    for child in reversed(children):
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for child in children:
        try:
            child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()


def run_all(*, host: str, base_port: int, ready_timeout_s: float = 120.0) -> int:
    """Start every service, wait until each is ready, then supervise until Ctrl-C or a child dies."""
    env = service_env(dict(os.environ), host, base_port)
    children: list[Child] = []
    stopping = False

    def _stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for name in SERVICE_ORDER:
            port = base_port + OFFSETS[name]
            command = [sys.executable, "-m", "supportbot.cli", "serve", name, "--host", host, "--port", str(port)]
            # A child of its own process group: Ctrl-C reaches only us, and we stop children in order.
            process = subprocess.Popen(command, env=env, start_new_session=True)
            children.append(Child(name, port, process))
        for child in children:
            if stopping:
                return 130
            if not wait_ready(f"http://{host}:{child.port}/readyz", ready_timeout_s, child.process):
                print(f"supportbot: {child.name} did not become ready on port {child.port}", file=sys.stderr)
                return 1
        gateway = next(c for c in children if c.name == "gateway")
        print(f"supportbot is up: gateway http://{host}:{gateway.port} "
              f"(nlp :{base_port + 1}, dialogue :{base_port + 2}, llm :{base_port + 3}). Ctrl-C stops it.",
              file=sys.stderr, flush=True)
        while not stopping:
            for child in children:
                if child.process.poll() is not None:
                    print(f"supportbot: {child.name} exited with {child.process.returncode}; stopping",
                          file=sys.stderr)
                    return 1
            time.sleep(0.2)
        return 0
    finally:
        stop_all(children)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
