"""What `supportbot up` shows while the services start: tqdm bars on a terminal, plain lines otherwise."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from supportbot.runner import Service


class PlainDisplay:
    """One line on stderr whenever a service's state changes (nlp's preparation: each step and each tenth)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._shown: dict[str, tuple[object, ...]] = {}

    def show(self, services: Iterable[Service]) -> None:
        for service in services:
            if self._changed(service):
                self.message(f"{service.name}: {service.state()}")

    def _changed(self, service: Service) -> bool:
        """Whether `service` moved since it was last shown (a preparation: by a tenth at least)."""
        fraction = service.readiness.fraction
        key = (service.readiness.status, service.readiness.step, service.readiness.degraded,
               int(fraction * 10) if fraction is not None else None, service.restarts)
        changed, self._shown[service.name] = self._shown.get(service.name) != key, key
        return changed

    def message(self, text: str) -> None:
        self.write(f"supportbot: {text}\n", self.stream)

    def write(self, text: str, stream: TextIO) -> None:
        stream.write(text)
        stream.flush()

    def finish(self) -> None:
        """All four are ready: from here on, state changes are plain lines whatever the display."""

    def close(self) -> None:
        pass


class TerminalDisplay(PlainDisplay):
    """A tqdm bar per service on a terminal while the system starts; plain lines once it is up."""

    def __init__(self, stream: TextIO, names: Sequence[str]) -> None:
        from tqdm import tqdm

        super().__init__(stream)
        self._tqdm = tqdm
        self._bars = {
            name: tqdm(total=100, position=index, file=stream, leave=True, dynamic_ncols=True,
                       desc=f"{name:<8}", bar_format="{desc} {percentage:3.0f}%|{bar:24}| {elapsed}{postfix}")
            for index, name in enumerate(names)
        }

    def show(self, services: Iterable[Service]) -> None:
        if not self._bars:
            super().show(services)
            return
        for service in services:
            self._changed(service)  # so that the plain lines after the bars start from what they showed
            bar = self._bars[service.name]
            readiness = service.readiness
            if readiness.ready:
                bar.n = 100
            elif readiness.fraction is not None:
                bar.n = round(readiness.fraction * 100)
            bar.postfix = service.state()
            bar.refresh()

    def write(self, text: str, stream: TextIO) -> None:
        if self._bars:
            self._tqdm.write(text.rstrip("\n"), file=stream)
        else:
            super().write(text, stream)

    def finish(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars = {}

    def close(self) -> None:
        self.finish()
