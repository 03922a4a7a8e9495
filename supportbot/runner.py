"""`supportbot up`: the four services as child processes, supervised until Ctrl-C.

- Start-up waits on progress, not on a clock. Each service's `/readyz` is read (nlp reports its model
  preparation there, step and fraction); `up` gives up only when a service keeps dying before it ever becomes
  ready, or when nothing that is not ready yet has moved (status, step or fraction) for `ready_timeout_s`. A
  service that waits on another one that is still preparing is not stuck, so the clock is the whole system's.
- A supervisor: a child that dies, at any time and however (SIGKILL included), is restarted on its port
  after an exponential backoff, logged on stderr and counted, while the others keep serving. One that keeps
  dying before it ever becomes ready gives up after `MAX_TRIES_BEFORE_READY` starts, with its exit code and
  the last thing it said.
- Each child leads a process group of its own (nlp's preparation process runs in nlp's), so Ctrl-C reaches
  only `up`, and a stop (SIGINT, SIGTERM, or SIGHUP when its terminal goes) reaches everything a service
  started: SIGTERM to each group, SIGKILL of what is left after a grace, all gone within `STOP_LIMIT_S` of
  the signal. A child that dies takes its group with it before it is started again, so an orphaned
  preparation never races the next one; on Linux a child also gets SIGTERM if `up` itself is killed.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TextIO

import httpx

from supportbot.processes import die_with_parent, live_groups, signal_group
from supportbot.up_display import PlainDisplay, TerminalDisplay

SERVICE_ORDER = ("nlp", "llm", "dialogue", "gateway")
OFFSETS = {"gateway": 0, "nlp": 1, "dialogue": 2, "llm": 3}
READY_STATUSES = ("ok", "degraded")  # what /readyz answers with 200

DEFAULT_READY_TIMEOUT_S = 300.0  # longer than any one preparation step on a slow, loaded machine
MAX_TRIES_BEFORE_READY = 5
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
STABLE_S = 60.0  # ready this long: its next death is a new incident, the backoff starts over
STOP_GRACE_S = 7.0  # SIGTERM → SIGKILL; uvicorn drains in-flight requests and nlp stops preparing meanwhile
STOP_LIMIT_S = 9.5  # everything gone within 10 s of the signal
TICK_S = 0.2
POLL_STARTING_S = 0.5
POLL_SERVING_S = 2.0
READ_TIMEOUT_S = 6.0  # a /readyz runs its own downstream checks within 4 s
OUTPUT_TAIL_LINES = 40
LINE_LIMIT = 1 << 20
# SIGHUP: the terminal `up` ran in has gone; its children must not run on without it.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def service_env(base_env: dict[str, str], host: str, base_port: int) -> dict[str, str]:
    """The environment that points each service at its siblings on `base_port`..`base_port+3`."""
    env = dict(base_env)
    sibling = connect_host(host)
    env["NLP_URL"] = f"http://{sibling}:{base_port + OFFSETS['nlp']}"
    env["DIALOGUE_URL"] = f"http://{sibling}:{base_port + OFFSETS['dialogue']}"
    env["LLM_URL"] = f"http://{sibling}:{base_port + OFFSETS['llm']}"
    # The internal services refuse calls without it (supportbot/service_auth.py): one for this run of `up`,
    # unless the operator set their own.
    if not env.get("SERVICE_TOKEN"):
        env["SERVICE_TOKEN"] = secrets.token_urlsafe(32)
    # Children write to pipes that `up` forwards: line by line, not in 8 kB blocks.
    env["PYTHONUNBUFFERED"] = "1"
    return env


def connect_host(host: str) -> str:
    """Where to reach a server that listens on `host` (a wildcard address is reached on loopback)."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def port_in_use(host: str, port: int) -> bool:
    """Whether a server could not listen on `host:port` now (as uvicorn binds: SO_REUSEADDR, so a port in
    TIME_WAIT is free)."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host.strip("[]") or "0.0.0.0", port))
        except OSError:
            return True
    return False


def service_command(name: str, host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "supportbot.cli", "serve", name, "--host", host, "--port", str(port)]


@dataclass(frozen=True)
class Readiness:
    """What a service's `/readyz` said last; "starting" until it answers, "restarting" while it waits."""

    status: str
    step: str | None = None
    fraction: float | None = None
    error: str | None = None
    degraded: tuple[str, ...] = ()

    @property
    def ready(self) -> bool:
        return self.status in READY_STATUSES

    def moved_from(self, other: Readiness) -> bool:
        return (self.status, self.step, self.fraction) != (other.status, other.step, other.fraction)

    def describe(self) -> str:
        if self.status == "preparing":
            done = f", {self.fraction:.0%}" if self.fraction is not None else ""
            return f"preparing ({self.step or 'models'}{done})"
        if self.status == "failed":
            return f"failed ({self.error or 'no reason given'})"
        if self.degraded:
            return f"{self.status} ({', '.join(self.degraded)})"
        return self.status


def parse_readiness(code: int, body: object) -> Readiness:
    """A `Readiness` from a `/readyz` answer (supportbot.health's `Health` body)."""
    data = body if isinstance(body, dict) else {}
    status = str(data.get("status") or ("ok" if code == 200 else "unavailable"))
    if code == 200 and status not in READY_STATUSES:
        status = "ok"
    elif code != 200 and status in READY_STATUSES:
        status = "unavailable"
    progress = data.get("progress") if isinstance(data.get("progress"), dict) else {}
    fraction = progress.get("fraction")
    degraded = data.get("degraded") if isinstance(data.get("degraded"), list) else []
    return Readiness(
        status=status,
        step=str(progress["step"]) if progress.get("step") is not None else None,
        fraction=float(fraction) if isinstance(fraction, int | float) else None,
        error=str(progress["error"]) if progress.get("error") else None,
        degraded=tuple(str(reason) for reason in degraded),
    )


@dataclass
class Service:
    """One supervised service and its current process."""

    name: str
    port: int
    command: Sequence[str]
    process: asyncio.subprocess.Process | None = None
    pgid: int | None = None  # the group of its latest process, which may outlive that process
    generation: int = 0
    readiness: Readiness = field(default_factory=lambda: Readiness("starting"))
    restarts: int = 0
    tries_before_ready: int = 0  # consecutive starts that ended before it was ready
    ready_since: float | None = None  # when its current process became ready
    backoff_step: int = 0
    restart_at: float | None = None
    failure: str | None = None  # why the supervisor stopped it itself (its preparation failed)
    output: deque[str] = field(default_factory=lambda: deque(maxlen=OUTPUT_TAIL_LINES))
    forwarders: list[asyncio.Task[None]] = field(default_factory=list)

    def state(self) -> str:
        text = self.readiness.describe()
        return f"{text}, restarts: {self.restarts}" if self.restarts else text


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def last_words(lines: Iterable[str]) -> str:
    """Why a service died, from the tail of its output: its last traceback's exception, else its last error
    log line, else its last line."""
    tail = [line.rstrip() for line in lines if line.strip()]
    if not tail:
        return "it printed nothing"
    headers = [index for index, line in enumerate(tail) if line.startswith("Traceback (most recent call last)")]
    if headers:
        after = tail[headers[-1] + 1:]
        # Frames are indented; the exception starts at the first line that is not.
        first = next((index for index, line in enumerate(after) if not line.startswith(" ")), None)
        if first is not None:
            words = [line.strip() for line in after[first:first + 4] if not line.strip().startswith("For further")]
            return " / ".join(words)[:500]
    for line in reversed(tail):
        record = _json_record(line)
        if record is not None and str(record.get("log.level", "")).lower() in ("error", "critical"):
            error = record.get("error")
            detail = error.get("message") if isinstance(error, dict) else None
            message = str(record.get("message", ""))
            return (f"{message}: {detail}" if detail else message)[:500]
    return tail[-1][:500]


def _json_record(line: str) -> dict[str, object] | None:
    if not line.startswith("{"):
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


class Supervisor:
    """Starts the services, watches their readiness and their processes, restarts, and stops them all."""

    def __init__(self, services: Sequence[Service], *, host: str, env: Mapping[str, str], ready_timeout_s: float,
                 display: PlainDisplay, on_ready: Callable[[], None] | None = None) -> None:
        self.services = list(services)
        self.host = connect_host(host)
        self.bind_host = host
        self._preexec = die_with_parent()
        self.env = dict(env)
        self.ready_timeout_s = ready_timeout_s
        self.display = display
        self.on_ready = on_ready
        self.is_up = False
        self.last_progress = time.monotonic()
        self._stop = asyncio.Event()
        self._kill_now = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None

    async def run(self) -> int:
        busy = [f"{service.name} :{service.port}" for service in self.services if port_in_use(self.bind_host,
                                                                                             service.port)]
        if busy:
            # Another `up` (or any server) there would answer our readiness polls for services that never ran.
            self.display.message(f"ports in use: {', '.join(busy)}; stop what holds them or choose another "
                                 "--base-port")
            self.display.close()
            return 1
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self._on_signal)
        try:
            async with httpx.AsyncClient(timeout=httpx.Timeout(READ_TIMEOUT_S, connect=1.0),
                                         trust_env=False) as client:
                self._client = client
                pollers = []
                try:
                    for service in self.services:
                        if not await self._start(service):
                            return 1
                        pollers.append(asyncio.create_task(self._poll(service, client)))
                    return await self._watch()
                finally:
                    for poller in pollers:
                        poller.cancel()
                    await asyncio.gather(*pollers, return_exceptions=True)
        finally:
            await self._stop_all()
            for sig in STOP_SIGNALS:
                loop.remove_signal_handler(sig)
            self.display.close()

    def _on_signal(self) -> None:
        if self._stop.is_set():  # a second Ctrl-C: no more grace
            self._kill_now = True
            self.display.message("stopping now")
        else:
            self.display.message("stopping")
        self._stop.set()

    async def _watch(self) -> int:
        """Until a stop is asked for (0) or `up` gives up (1, or the exit code of the service it gave up on)."""
        while not self._stop.is_set():
            now = time.monotonic()
            for service in self.services:
                process = service.process
                if process is not None and process.returncode is not None:
                    if not self._on_exit(service, process.returncode, now):
                        # Its own exit code where it gave one, so that scripts can tell why.
                        return process.returncode if 0 < process.returncode < 126 else 1
                elif process is None and service.restart_at is not None and now >= service.restart_at:
                    if not await self._start(service):
                        return 1
            self.display.show(self.services)
            if not self.is_up and all(service.readiness.ready for service in self.services):
                # Read all four again at once: what is announced (degraded or not) is their state now, not
                # the gateway's reading of a dialogue that was still waiting for nlp a poll ago.
                await self._refresh()
                self.display.show(self.services)
                if all(service.readiness.ready for service in self.services):
                    self._announce()
            elif (not self.is_up and self.ready_timeout_s > 0
                  and now - self.last_progress > self.ready_timeout_s):
                self._give_up_stalled()
                return 1
            try:
                await asyncio.wait_for(self._stop.wait(), TICK_S)
            except TimeoutError:
                pass
        return 0

    def _announce(self) -> None:
        self.is_up = True
        self.display.finish()
        ports = {service.name: service.port for service in self.services}
        others = ", ".join(f"{name} :{ports[name]}" for name in ("nlp", "dialogue", "llm") if name in ports)
        gateway = ports.get("gateway")
        where = f"gateway http://{self.host}:{gateway}" if gateway is not None else "all services"
        self.display.write(f"supportbot is up: {where} ({others}). Ctrl-C stops it.\n", self.display.stream)
        degraded = [f"{service.name} answers without {', '.join(service.readiness.degraded) or 'some of its parts'}"
                    for service in self.services if service.readiness.status == "degraded"]
        if degraded:
            self.display.message(f"degraded: {'; '.join(degraded)}")
        if self.on_ready is not None:
            self.on_ready()

    def _give_up_stalled(self) -> None:
        stuck = [f"{service.name} {service.state()}" for service in self.services if not service.readiness.ready]
        self.display.message(f"no progress for {self.ready_timeout_s:g} s (--ready-timeout): {'; '.join(stuck)}; "
                             "stopping")

    async def _start(self, service: Service) -> bool:
        """Start `service`'s process (False: it could not be started at all)."""
        if service.pgid is not None and live_groups([service.pgid]):
            # What its last process started still runs (and may hold its port): kill it first, start soon after.
            signal_group(service.pgid, signal.SIGKILL)
            service.restart_at = time.monotonic() + TICK_S
            return True
        restarting = service.generation > 0
        try:
            process = await asyncio.create_subprocess_exec(
                *service.command, env=self.env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, start_new_session=True, limit=LINE_LIMIT, preexec_fn=self._preexec)
        except OSError as exc:
            self.display.message(f"{service.name} cannot be started: {exc}; stopping")
            return False
        service.process, service.pgid = process, process.pid
        service.generation += 1
        service.restart_at = None
        service.failure = None
        service.ready_since = None
        service.readiness = Readiness("starting")
        service.output.clear()
        service.forwarders = [asyncio.create_task(self._forward(service, stream, target))
                              for stream, target in ((process.stdout, sys.stdout), (process.stderr, sys.stderr))
                              if stream is not None]
        if restarting:
            service.restarts += 1
            self.display.message(f"{service.name} restarted (pid {process.pid}, restart {service.restarts})")
        self.last_progress = time.monotonic()
        return True

    async def _forward(self, service: Service, stream: asyncio.StreamReader, target: TextIO) -> None:
        """Pass a child's output on, line by line, and keep its tail for the reason it may die."""
        while True:
            try:
                raw = await stream.readline()
            except ValueError:  # one line over LINE_LIMIT: dropped, the rest still flows
                continue
            if not raw:
                return
            line = raw.decode("utf-8", errors="replace")
            service.output.append(line)
            self.display.write(line if line.endswith("\n") else line + "\n", target)

    def _on_exit(self, service: Service, code: int, now: float) -> bool:
        """A child died: schedule its restart (True), or give up on it (False)."""
        pid = service.process.pid if service.process is not None else None
        service.process = None
        signal_group(service.pgid, signal.SIGKILL)  # what it started (nlp's preparation) goes with it
        if self._stop.is_set():
            return True
        how = describe_exit(code)
        # Killed by a signal: that is the reason, whatever it said last.
        reason = service.failure or (None if code < 0 else last_words(service.output))
        because = f": {reason}" if reason else ""
        if service.ready_since is None:
            service.tries_before_ready += 1
            if service.tries_before_ready >= MAX_TRIES_BEFORE_READY:
                self.display.message(
                    f"{service.name} {how} before it became ready, {service.tries_before_ready} times in a row; "
                    f"giving up{because}")
                return False
        else:
            service.tries_before_ready = 0
            if now - service.ready_since >= STABLE_S:
                service.backoff_step = 0
        delay = min(BACKOFF_FIRST_S * 2 ** service.backoff_step, BACKOFF_MAX_S)
        service.backoff_step += 1
        service.restart_at = now + delay
        service.ready_since = None
        service.readiness = Readiness("restarting")
        self.last_progress = now
        self.display.message(f"{service.name} (pid {pid}) {how}{because}; restart {service.restarts + 1} "
                             f"in {delay:g} s")
        return True

    async def _poll(self, service: Service, client: httpx.AsyncClient) -> None:
        while True:
            await self._poll_once(service, client)
            serving = self.is_up and service.readiness.ready
            await asyncio.sleep(POLL_SERVING_S if serving else POLL_STARTING_S)

    async def _poll_once(self, service: Service, client: httpx.AsyncClient) -> None:
        process, generation = service.process, service.generation
        if process is not None and process.returncode is None:
            readiness = await self._read(client, f"http://{self.host}:{service.port}/readyz", service.readiness)
            if service.generation == generation and process.returncode is None:
                self._update(service, readiness)

    async def _refresh(self) -> None:
        if self._client is not None:
            await asyncio.gather(*(self._poll_once(service, self._client) for service in self.services))

    @staticmethod
    async def _read(client: httpx.AsyncClient, url: str, previous: Readiness) -> Readiness:
        try:
            response = await client.get(url)
        except httpx.TimeoutException:
            return Readiness("not answering")
        except httpx.TransportError:
            return previous if previous.status in ("starting", "not answering") else Readiness("not answering")
        try:
            body: object = response.json()
        except ValueError:
            body = None
        return parse_readiness(response.status_code, body)

    def _update(self, service: Service, readiness: Readiness) -> None:
        now = time.monotonic()
        previous, service.readiness = service.readiness, readiness
        if readiness.moved_from(previous):
            self.last_progress = now
        if readiness.ready and service.ready_since is None:
            service.ready_since = now
            service.tries_before_ready = 0
        if readiness.status == "failed" and service.failure is None and service.process is not None:
            # Its preparation failed and will not resume by itself: stop it; the restart starts it over
            # (counted, bounded like any other death before readiness).
            service.failure = f"its preparation failed: {readiness.error or 'no reason given'}"
            self.display.message(f"{service.name}: {service.failure}; stopping it")
            task = asyncio.create_task(self._terminate(service, service.process))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _terminate(self, service: Service, process: asyncio.subprocess.Process) -> None:
        signal_group(service.pgid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), STOP_GRACE_S)
        except TimeoutError:
            signal_group(process.pid, signal.SIGKILL)

    async def _stop_all(self) -> None:
        """SIGTERM every group, SIGKILL what is left after the grace; all gone within STOP_LIMIT_S."""
        started = time.monotonic()
        self._stop.set()  # from here on a death is no restart, and a signal means: no more grace
        groups = {service.pgid for service in self.services if service.pgid is not None}
        for service in reversed(self.services):
            signal_group(service.pgid, signal.SIGKILL if self._kill_now else signal.SIGTERM)
        while live_groups(groups) and time.monotonic() - started < STOP_GRACE_S and not self._kill_now:
            await asyncio.sleep(0.1)
        left = live_groups(groups)
        for pgid in left:
            signal_group(pgid, signal.SIGKILL)
        while left and time.monotonic() - started < STOP_LIMIT_S:
            await asyncio.sleep(0.05)
            left = live_groups(left)
        for service in self.services:
            if service.process is not None:
                try:
                    left_s = max(0.1, STOP_LIMIT_S - (time.monotonic() - started))
                    await asyncio.wait_for(service.process.wait(), left_s)
                except TimeoutError:
                    pass
        # What they wrote last (access lines, shutdown messages) is still in the pipes.
        forwarders = [task for service in self.services for task in service.forwarders]
        if forwarders:
            await asyncio.wait(forwarders, timeout=max(0.1, STOP_LIMIT_S - (time.monotonic() - started)))
        for task in forwarders:
            task.cancel()
        if left:
            self.display.message(f"process groups {sorted(left)} did not stop")


def run_all(*, host: str, base_port: int, ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S,
            on_ready: Callable[[], None] | None = None,
            commands: Mapping[str, Sequence[str]] | None = None) -> int:
    """Run every service until SIGINT/SIGTERM (0) or until `up` gives up (1, or the failing service's code).

    `on_ready` runs once, when all four first answer `/readyz` with 200. `commands` replaces a service's
    command line (tests run stand-ins for some).
    """
    services = [Service(name, base_port + OFFSETS[name],
                        (commands or {}).get(name) or service_command(name, host, base_port + OFFSETS[name]))
                for name in SERVICE_ORDER]
    stream = sys.stderr
    on_terminal = stream.isatty() and os.environ.get("TERM", "") != "dumb" and _columns(stream) > 0
    display = TerminalDisplay(stream, SERVICE_ORDER) if on_terminal else PlainDisplay(stream)
    supervisor = Supervisor(services, host=host, env=service_env(dict(os.environ), host, base_port),
                            ready_timeout_s=ready_timeout_s, display=display, on_ready=on_ready)
    return asyncio.run(supervisor.run())


def _columns(stream: TextIO) -> int:
    """The terminal's width; 0 for one that has none (a pty nobody sized), where bars would draw empty."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError):
        return 0
