"""A sandbox's stdout and stderr, read a batch at a time and merged into one log.

Modal serves each stream as a live byte stream from an offset (V2 sandboxes: the task
command router; V1: ``SandboxGetLogs``) that ends when the sandbox exits. A ``logs()``
call reads both streams at once for a bounded time: whatever arrives until the streams
end, go quiet for ``idle`` seconds, or ``budget`` seconds pass. Only whole lines are
handed out (a trailing partial line waits for its newline, or for the end).

The cursor is the byte offset reached in each stream (``"o<bytes>.e<bytes>"``), so any
process can continue where another stopped. The readers of a sandbox are kept between
calls (``Readers``) and reused when the cursor is where they stopped; otherwise a fresh
reader skips the cursor's bytes. Lines carry the time they were read: Modal's streams
have no timestamps, so stdout and stderr interleave in the order they arrived.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from providers.base import LogBatch, LogLine

_CURSOR = re.compile(r"^o(\d+)\.e(\d+)$")
STREAMS = ("stdout", "stderr")


def parse_cursor(cursor: str | None) -> tuple[int, int]:
    if not cursor:
        return 0, 0
    match = _CURSOR.match(cursor)
    if not match:
        raise ValueError(f"not a Modal log cursor: {cursor!r}")
    return int(match.group(1)), int(match.group(2))


def make_cursor(stdout: int, stderr: int) -> str:
    return f"o{stdout}.e{stderr}"


@dataclass
class StreamState:
    """One stream's reader and how far it got: ``consumed`` bytes came out of the reader,
    of which ``pending`` (a partial line) was not handed out yet."""

    reader: Any  # modal's StreamReader: keeps its offset across iterators
    iterator: AsyncIterator[str] | None = None
    consumed: int = 0
    pending: str = ""
    eof: bool = False

    @property
    def offset(self) -> int:
        return self.consumed - len(self.pending.encode())

    async def next(self, wait: float) -> str | None:
        """The next chunk, or None at the end; TimeoutError if none comes within ``wait``.

        A wait that times out cancels the iterator, which ends it; the reader itself
        keeps its place, so the next call takes a fresh iterator from it."""
        if self.iterator is None:
            self.iterator = self.reader.__aiter__()
        try:
            return await asyncio.wait_for(self.iterator.__anext__(), wait)
        except StopAsyncIteration:
            return None
        except TimeoutError:
            self.iterator = None
            raise


@dataclass
class SandboxReaders:
    sandbox: Any
    streams: dict[str, StreamState] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Readers:
    """Stream readers per sandbox, least recently used dropped beyond ``limit``."""

    def __init__(self, limit: int = 2000) -> None:
        self.limit = limit
        self._entries: OrderedDict[str, SandboxReaders] = OrderedDict()

    def get(self, sandbox_id: str) -> SandboxReaders | None:
        entry = self._entries.get(sandbox_id)
        if entry is not None:
            self._entries.move_to_end(sandbox_id)
        return entry

    def put(self, sandbox_id: str, entry: SandboxReaders) -> None:
        self._entries[sandbox_id] = entry
        self._entries.move_to_end(sandbox_id)
        while len(self._entries) > self.limit:
            self._entries.popitem(last=False)

    def drop(self, sandbox_id: str) -> None:
        self._entries.pop(sandbox_id, None)

    def clear(self) -> None:
        self._entries.clear()


def _stream_reader(sandbox: Any, stream: str) -> Any:
    return sandbox.stdout if stream == "stdout" else sandbox.stderr


async def _skip(state: StreamState, target: int, budget: float) -> bool:
    """Read and drop a fresh reader's first ``target`` bytes (a cursor from elsewhere).
    False if the bytes did not all come within ``budget``."""
    deadline = time.monotonic() + budget
    while state.consumed < target:
        try:
            chunk = await state.next(max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            return False
        if chunk is None:
            state.eof = True
            return state.consumed >= target
        data = chunk.encode()
        if state.consumed + len(data) > target:
            # Cursors sit after a newline, a single byte, so this split is on a character.
            state.pending = data[target - state.consumed:].decode(errors="replace")
        state.consumed += len(data)
    return True


async def _read(state: StreamState, stream: str, out: list[tuple[float, LogLine]], *,
                first: float, idle: float, deadline: float, max_lines: int) -> None:
    """Read whole lines into ``out`` until the stream ends, goes quiet or time is up."""
    wait = first
    while not state.eof and len(out) < max_lines:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        try:
            chunk = await state.next(min(wait, remaining))
        except TimeoutError:
            return  # quiet: the reader keeps its place for the next call
        wait = idle
        now = time.time()
        if chunk is None:
            state.eof = True
            if state.pending:
                out.append((now, _line(now, state.pending, stream)))
                state.pending = ""
            return
        state.consumed += len(chunk.encode())
        text = state.pending + chunk
        *lines, state.pending = text.split("\n")
        for line in lines:
            out.append((now, _line(now, line, stream)))


def _line(at: float, text: str, stream: str) -> LogLine:
    return LogLine(datetime.fromtimestamp(at, UTC), text.rstrip("\r"), stream)


async def read_batch(entry: SandboxReaders, cursor: str | None, *, first: float = 0.5,
                     idle: float = 0.1, budget: float = 2.0,
                     max_lines: int = 10000) -> LogBatch:
    """Lines of both streams after ``cursor`` and the cursor after them (see module)."""
    offsets = dict(zip(STREAMS, parse_cursor(cursor), strict=True))
    deadline = time.monotonic() + budget
    for stream in STREAMS:
        state = entry.streams.get(stream)
        if state is None or state.offset != offsets[stream]:
            state = StreamState(_stream_reader(entry.sandbox, stream))
            entry.streams[stream] = state
            if offsets[stream] and not await _skip(state, offsets[stream], budget):
                # The skip did not finish in time: start over next call, hand out nothing.
                entry.streams.pop(stream, None)
                return LogBatch([], cursor)
    out: dict[str, list[tuple[float, LogLine]]] = {s: [] for s in STREAMS}
    await asyncio.gather(*(
        _read(entry.streams[s], s, out[s], first=first, idle=idle, deadline=deadline,
              max_lines=max_lines) for s in STREAMS))
    merged = sorted(out["stdout"] + out["stderr"], key=lambda item: item[0])
    lines = [line for _, line in merged]
    return LogBatch(lines, make_cursor(entry.streams["stdout"].offset,
                                       entry.streams["stderr"].offset))
