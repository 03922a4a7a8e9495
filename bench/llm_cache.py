"""Cache hits and misses through supportbot's llm service vs the LiteLLM proxy, same upstream, same Redis.

Both run as one worker in front of the same OpenAI-compatible loopback upstream (tests/fake_openai.py) with
Redis response caching; `wrk` drives `POST /v1/chat/completions` at a fixed number of connections, one
server at a time. Needs `wrk` (Debian) and a LiteLLM proxy install (`pip install 'litellm[proxy]'`, best in
its own virtualenv: pass its `litellm` executable with --litellm).

    python bench/llm_cache.py --litellm /tmp/litellm-venv/bin/litellm [--connections 16] [--seconds 15]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import redis

REPO = Path(__file__).resolve().parents[1]
MASTER_KEY = "sk-bench-master-key-0123456789abcdef"  # LiteLLM refuses to start without one; ours ignores it
BODY = {"model": "gpt-4o-mini", "temperature": 0,
        "messages": [{"role": "user", "content": "How long does standard shipping take?"}]}
HIT_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Supportbot-Tenant"] = "bench"
wrk.headers["X-Supportbot-Service-Token"] = "%s"
wrk.headers["Authorization"] = "Bearer %s"
wrk.body = '%s'
"""
MISS_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Supportbot-Tenant"] = "bench"
wrk.headers["X-Supportbot-Service-Token"] = "%s"
wrk.headers["Authorization"] = "Bearer %s"
counter = 0
request = function()
  counter = counter + 1
  local body = '{"model": "gpt-4o-mini", "temperature": 0, "messages": [{"role": "user", "content": "question '
    .. counter .. '-' .. math.random(1, 1000000000) .. '"}]}'
  return wrk.format(nil, nil, nil, body)
end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{url}: server exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{url} not ready")


def run_wrk(url: str, script: str, connections: int, seconds: int) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    out = subprocess.run(["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "--latency", "-s",
                          handle.name, url], capture_output=True, text=True, check=True).stdout
    os.unlink(handle.name)

    def ms(label: str) -> float:
        match = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        if not match:
            return float("nan")
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50_ms": ms("50"), "p99_ms": ms("99"), "non_2xx": int(errors.group(1)) if errors else 0}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--litellm", default=shutil.which("litellm"), help="the LiteLLM proxy executable")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--redis-db", type=int, default=11, help="shared politely: only this run's keys are written "
                        "(under its own prefixes) and deleted afterwards")
    args = parser.parse_args()
    if not args.litellm:
        raise SystemExit("LiteLLM proxy not found: pip install 'litellm[proxy]' and pass --litellm")
    run_id = uuid.uuid4().hex[:8]
    prefixes = (f"sb-bench-{run_id}:", f"litellm-bench-{run_id}")
    tmp = Path(tempfile.mkdtemp(prefix="sb-llm-bench-"))
    token = secrets.token_urlsafe(32)  # the llm service's SERVICE_TOKEN; LiteLLM ignores the header
    env = {**os.environ, "PYTHONPATH": str(REPO), "LOG_LEVEL": "WARNING", "SERVICE_TOKEN": token}
    upstream_port, ours_port, theirs_port = free_port(), free_port(), free_port()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        processes.append(subprocess.Popen(
            [sys.executable, "-c", "import uvicorn; from tests.fake_openai import FakeOpenAI; "
             f"uvicorn.run(FakeOpenAI().app(), host='127.0.0.1', port={upstream_port}, log_level='warning')"],
            env=env, cwd=REPO))
        upstream = f"http://127.0.0.1:{upstream_port}/v1"
        ours_env = {**env, "OPENAI_API_KEY": "sk-bench", "OPENAI_BASE_URL": upstream, "OPENAI_MODEL": "gpt-4o-mini",
                    "REDIS_URL": f"redis://127.0.0.1:6379/{args.redis_db}", "REDIS_KEY_PREFIX": prefixes[0],
                    "SUPPORTBOT_DATA_DIR": str(tmp / "ours"), "DATABASE_URL": f"sqlite:///{tmp / 'ours.db'}"}
        for command in (["migrate"], ["tenants", "create", "bench"]):  # llm serves only tenants that exist
            subprocess.run([sys.executable, "-m", "supportbot.cli", *command], cwd=REPO, env=ours_env, check=True,
                           stdout=subprocess.DEVNULL)
        ours = subprocess.Popen(
            [sys.executable, "-m", "supportbot.cli", "serve", "llm", "--port", str(ours_port)], cwd=REPO,
            env=ours_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        processes.append(ours)
        config = tmp / "litellm.yaml"
        config.write_text(json.dumps({
            "model_list": [{"model_name": "gpt-4o-mini", "litellm_params": {
                "model": "openai/gpt-4o-mini", "api_base": upstream, "api_key": "sk-bench"}}],
            "litellm_settings": {"cache": True, "cache_params": {
                "type": "redis", "host": "127.0.0.1", "port": 6379, "db": args.redis_db,
                "namespace": prefixes[1]}},
        }))
        theirs = subprocess.Popen([args.litellm, "--config", str(config), "--port", str(theirs_port),
                                   "--num_workers", "1"],
                                  env={**os.environ, "LITELLM_LOG": "ERROR", "LITELLM_MASTER_KEY": MASTER_KEY},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        processes.append(theirs)
        wait_ready(f"http://127.0.0.1:{ours_port}/healthz", ours)
        wait_ready(f"http://127.0.0.1:{theirs_port}/health/liveliness", theirs)
        results = {}
        for name, port, path in (("supportbot llm", ours_port, "/v1/chat/completions"),
                                 ("LiteLLM proxy", theirs_port, "/chat/completions")):
            url = f"http://127.0.0.1:{port}{path}"
            warm = httpx.post(url, json=BODY, timeout=30, headers={"X-Supportbot-Tenant": "bench",
                                                                   "X-Supportbot-Service-Token": token,
                                                                   "Authorization": f"Bearer {MASTER_KEY}"})
            warm.raise_for_status()
            hit = run_wrk(url, HIT_LUA % (token, MASTER_KEY, json.dumps(BODY)), args.connections, args.seconds)
            miss = run_wrk(url, MISS_LUA % (token, MASTER_KEY), args.connections, args.seconds)
            results[name] = (hit, miss)
        print(f"{args.connections} connections, {args.seconds} s per run, one worker each, Redis cache, "
              "same loopback upstream")
        print("| server | hit req/s | hit p50 ms | hit p99 ms | miss req/s | miss p50 ms | miss p99 ms | non-2xx |")
        print("|---|---|---|---|---|---|---|---|")
        for name, (hit, miss) in results.items():
            print(f"| {name} | {hit['rps']:.0f} | {hit['p50_ms']:.1f} | {hit['p99_ms']:.1f} | {miss['rps']:.0f} | "
                  f"{miss['p50_ms']:.1f} | {miss['p99_ms']:.1f} | {hit['non_2xx'] + miss['non_2xx']} |")
        (ours_hit, ours_miss), (lite_hit, lite_miss) = results["supportbot llm"], results["LiteLLM proxy"]
        print(f"cache hits: {ours_hit['rps'] / lite_hit['rps']:.1f}x the throughput, "
              f"p99 {ours_hit['p99_ms'] / lite_hit['p99_ms']:.2f}x; misses: "
              f"{ours_miss['rps'] / lite_miss['rps']:.1f}x the throughput")
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        client = redis.Redis(db=args.redis_db)
        for prefix in prefixes:
            for key in client.scan_iter(match=f"{prefix}*", count=1000):
                client.delete(key)


if __name__ == "__main__":
    main()
