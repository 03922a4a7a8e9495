"""HTTP latency of the nlp service: `POST /v1/analyze` over one keep-alive connection on loopback.

Starts `supportbot serve nlp` on a free port (model from NLP_MODEL_DIR or the default), sends sequential
requests with real customer-support sentences, prints p50/p90/p99 in ms.

    python bench/nlp_http.py [--requests 1000]
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import httpx

SENTENCES = [
    "Where is my order ORD-48213? It was supposed to arrive yesterday.",
    "I want to return the shoes I bought last week",
    "How do I reset my password?",
    "Can I talk to a real person please",
    "My card was charged twice for the same order!!",
    "注文した商品がまだ届きません",
    "Do you ship to Canada?",
    "hi",
    "What's the weather like in Paris tomorrow?",
    "I'd like an invoice for order #99812 sent to billing@example.com",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SUPPORTBOT_DATA_DIR": os.environ.get(
        "SUPPORTBOT_DATA_DIR", tempfile.mkdtemp(prefix="sb-bench-")), "LOG_LEVEL": "WARNING",
           "SERVICE_TOKEN": os.environ.get("SERVICE_TOKEN") or secrets.token_urlsafe(32)}
    server = subprocess.Popen([sys.executable, "-m", "supportbot.cli", "serve", "nlp", "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30,
                          headers={"X-Supportbot-Service-Token": env["SERVICE_TOKEN"]}) as client:
            deadline = time.monotonic() + 180
            while True:
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("nlp service did not start")
                time.sleep(0.2)
            for sentence in SENTENCES * 5:  # warm-up
                client.post("/v1/analyze", json={"text": sentence})
            latencies = []
            for i in range(args.requests):
                started = time.perf_counter()
                response = client.post("/v1/analyze", json={"text": SENTENCES[i % len(SENTENCES)]})
                latencies.append((time.perf_counter() - started) * 1000)
                response.raise_for_status()
        q = statistics.quantiles(latencies, n=100)
        print(f"POST /v1/analyze, {args.requests} sequential requests on loopback: "
              f"p50={q[49]:.2f} ms  p90={q[89]:.2f} ms  p99={q[98]:.2f} ms")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
