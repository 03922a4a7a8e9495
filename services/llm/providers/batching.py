"""Dynamic batching: concurrent requests are gathered for a few milliseconds and run as one batch.

A request waits at most `max_wait_ms` for company, and a batch holds at most `max_batch_size` requests;
requests whose parameters differ (`key`) never share a batch. The batch function runs in a worker thread,
so the event loop keeps accepting requests while the model computes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

RequestT = TypeVar("RequestT")
ResultT = TypeVar("ResultT")


@dataclass
class _Pending(Generic[RequestT, ResultT]):
    request: RequestT
    future: asyncio.Future[ResultT] = field(repr=False)


class DynamicBatcher(Generic[RequestT, ResultT]):
    def __init__(self, run_batch: Callable[[Sequence[RequestT]], list[ResultT]], *,
                 key: Callable[[RequestT], Hashable], max_batch_size: int = 32, max_wait_ms: float = 5.0) -> None:
        self.run_batch = run_batch
        self.key = key
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self.batches_run = 0
        self.batch_sizes: list[int] = []
        self._queue: asyncio.Queue[_Pending[RequestT, ResultT]] | None = None
        self._worker: asyncio.Task[None] | None = None

    async def submit(self, request: RequestT) -> ResultT:
        if self._worker is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._loop())
        assert self._queue is not None
        pending: _Pending[RequestT, ResultT] = _Pending(request, asyncio.get_running_loop().create_future())
        await self._queue.put(pending)
        return await pending.future

    async def _loop(self) -> None:
        assert self._queue is not None
        held: list[_Pending[RequestT, ResultT]] = []
        while True:
            first = held.pop(0) if held else await self._queue.get()
            batch = [first]
            group = self.key(first.request)
            deadline = asyncio.get_running_loop().time() + self.max_wait_s
            while len(batch) < self.max_batch_size:
                timeout = deadline - asyncio.get_running_loop().time()
                if timeout <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), timeout)
                except TimeoutError:
                    break
                (batch if self.key(item.request) == group else held).append(item)
            await self._run(batch)

    async def _run(self, batch: list[_Pending[RequestT, ResultT]]) -> None:
        live = [p for p in batch if not p.future.cancelled()]
        if not live:
            return
        self.batches_run += 1
        self.batch_sizes.append(len(live))
        try:
            results = await asyncio.to_thread(self.run_batch, [p.request for p in live])
        except Exception as exc:  # noqa: BLE001 - every waiter must learn about the failure
            for pending in live:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        for pending, result in zip(live, results, strict=True):
            if not pending.future.done():
                pending.future.set_result(result)

    async def aclose(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
