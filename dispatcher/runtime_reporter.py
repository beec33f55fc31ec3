"""The runtime's line to the API: log lines in batches and state reports, in order, retried.

``Reporter`` keeps one queue of log lines and state reports and one sender thread that
delivers them in the order they were made (POST /api/runs/{id}/logs and /state, with the
run's token). A delivery that fails for a reason that may pass (connection refused, 5xx,
429) is retried with capped exponential backoff and jitter while everything stays queued;
the user's code never waits for it and never sees it fail. A refusal (other 4xx) is final.

If the API stays out of reach for ``give_up_seconds`` the reporter stops trying and writes
what it holds, and everything after, to the process's own stderr, where the provider's log
capture (the process supervisor, CloudWatch, ...) still finds it. One line on stderr says
when the API became unreachable and one when it answered again; the token never appears.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

import httpx

MAX_MESSAGE_CHARS = 32 * 1024  # a longer line is cut (the API takes 64 KiB)
MAX_BATCH_LINES = 500  # the API takes 1000
MAX_BATCH_BYTES = 256 * 1024  # the API takes 1 MiB per request
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class ReporterSettings:
    batch_seconds: float = 0.5  # how long a log line may wait for others to share its request
    max_backoff_seconds: float = 10.0
    give_up_seconds: float = 900.0  # of the API being unreachable without a break
    max_buffered_lines: int = 100_000  # beyond this the oldest lines are dropped (counted)
    request_timeout_seconds: float = 30.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ReporterSettings:
        """PUSHPOOL_REPORT_MAX_BACKOFF_SECONDS, PUSHPOOL_REPORT_GIVE_UP_SECONDS,
        PUSHPOOL_REPORT_BATCH_SECONDS override the defaults."""
        values: dict[str, Any] = {}
        for name, key in (("max_backoff_seconds", "PUSHPOOL_REPORT_MAX_BACKOFF_SECONDS"),
                          ("give_up_seconds", "PUSHPOOL_REPORT_GIVE_UP_SECONDS"),
                          ("batch_seconds", "PUSHPOOL_REPORT_BATCH_SECONDS")):
            raw = environ.get(key)
            if raw:
                try:
                    values[name] = max(float(raw), 0.0)
                except ValueError:
                    print(f"pushpool execute: ignoring {key}={raw!r} (not a number)",
                          file=sys.stderr)
        return cls(**values)


@dataclass
class _Line:
    timestamp: datetime
    stream: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"timestamp": self.timestamp.isoformat(), "stream": self.stream,
                "message": self.message}


@dataclass
class StateAnswer:
    """How a state report ended: answered by the API (with its status) or not."""

    answered: bool
    status: int | None = None
    message: str = ""


@dataclass
class _State:
    body: dict[str, Any]
    done: threading.Event = field(default_factory=threading.Event)
    answer: StateAnswer | None = None


class _Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class Reporter:
    """Sends one run's logs and states to the API from a background thread."""

    def __init__(self, api_url: str, run_id: str, token: str | None,
                 settings: ReporterSettings | None = None,
                 diagnostics: TextIO | None = None,
                 transport: httpx.BaseTransport | None = None):
        self.settings = settings or ReporterSettings()
        self.run_id = run_id
        self._diagnostics = diagnostics or sys.__stderr__ or sys.stderr
        headers = {"User-Agent": "pushpool-runtime"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._base = api_url.rstrip("/").removesuffix("/api")
        self._http = httpx.Client(
            base_url=self._base, headers=headers, transport=transport,
            timeout=httpx.Timeout(self.settings.request_timeout_seconds, connect=5.0))
        self._queue: deque[_Line | _State] = deque()
        self._lines_queued = 0
        self._dropped = 0
        self._cond = threading.Condition()
        self._closing = False
        self._offline = False  # gave up on the API: everything goes to stderr
        self._failing_since: float | None = None
        self._thread = threading.Thread(target=self._run, name="pushpool-reporter",
                                        daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ producers

    def log(self, stream: str, message: str, timestamp: datetime | None = None) -> None:
        """Queue one line (never blocks on the network)."""
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[:MAX_MESSAGE_CHARS] + " [line cut]"
        line = _Line(timestamp or datetime.now(UTC), stream, message)
        with self._cond:
            if self._offline:
                self._write_diagnostic_lines([line])
                return
            self._queue.append(line)
            self._lines_queued += 1
            if self._lines_queued > self.settings.max_buffered_lines:
                self._drop_oldest_line()
            self._cond.notify()

    def report_state(self, state: str, message: str | None = None, result: Any = None,
                     wait: float | None = None, exit_code: int | None = None) -> StateAnswer:
        """Queue a state report after the lines before it; wait up to ``wait`` seconds
        (None: until it is delivered, refused, or the reporter gives up) for its answer.
        A final report carries the exit code the runtime is about to exit with."""
        body: dict[str, Any] = {"state": state, "message": message}
        if result is not None:
            body["result"] = result
        if exit_code is not None:
            body["exit_code"] = exit_code
        item = _State(body)
        with self._cond:
            if self._offline:
                return StateAnswer(False, message="the API was unreachable for too long")
            self._queue.append(item)
            self._cond.notify()
        if not item.done.wait(wait):
            return StateAnswer(False, message="no answer yet; it stays queued")
        assert item.answer is not None
        return item.answer

    def close(self, timeout: float | None = None) -> None:
        """Deliver what is queued (waiting at most ``timeout``), then stop; what could not
        be delivered goes to stderr."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)
        with self._cond:
            self._offline = True
            leftovers = [item for item in self._queue if isinstance(item, _Line)]
            self._queue.clear()
            if leftovers:
                self._write_diagnostic_lines(leftovers)
        self._http.close()

    # ------------------------------------------------------------------ the sender

    def _run(self) -> None:
        attempt = 0
        while True:
            with self._cond:
                batch = self._next_batch()
                if batch is None:
                    return
            try:
                self._send(batch)
            except _Refused as refused:
                self._finish(batch, StateAnswer(True, refused.status, refused.message),
                             refused)
                attempt = 0
                continue
            except (httpx.TransportError, _Retryable) as exc:
                attempt += 1
                if self._failing(exc):
                    return
                self._sleep(min(self.settings.max_backoff_seconds, 0.1 * 2 ** attempt)
                            * random.uniform(0.5, 1.0))
                continue
            self._finish(batch, StateAnswer(True, 200), None)
            attempt = 0

    def _next_batch(self) -> list[_Line] | _State | None:
        """Under the lock: the next thing to send, waiting for it; None when done."""
        while True:
            if self._offline:
                return None
            if self._queue:
                head = self._queue[0]
                if isinstance(head, _State):
                    return head
                due = head.timestamp.timestamp() + self.settings.batch_seconds
                ready = (self._closing or self._lines_queued >= MAX_BATCH_LINES
                         or any(isinstance(item, _State) for item in self._queue)
                         or time.time() >= due)
                if ready:
                    return self._take_lines()
                self._cond.wait(max(due - time.time(), 0.01))
                continue
            if self._closing:
                return None
            self._cond.wait()

    def _take_lines(self) -> list[_Line]:
        """The leading lines of the queue, up to one request's worth (they stay queued)."""
        batch: list[_Line] = []
        size = 0
        for item in self._queue:
            if not isinstance(item, _Line) or len(batch) >= MAX_BATCH_LINES:
                break
            size += len(item.message) + 100
            if batch and size > MAX_BATCH_BYTES:
                break
            batch.append(item)
        return batch

    def _send(self, batch: list[_Line] | _State) -> None:
        body: Any
        if isinstance(batch, _State):
            path, body = f"/api/runs/{self.run_id}/state", batch.body
        else:
            lines = [line.to_json() for line in batch]
            if self._dropped:
                lines.insert(0, _Line(datetime.now(UTC), "runtime", (
                    f"[pushpool] {self._dropped} older log lines were dropped while the API "
                    "was unreachable")).to_json())
            path, body = f"/api/runs/{self.run_id}/logs", lines
        response = self._http.post(path, content=json.dumps(body, default=str),
                                   headers={"Content-Type": "application/json"})
        if response.status_code < 400:
            if not isinstance(batch, _State):
                self._dropped = 0
            return
        message = _error_message(response)
        if response.status_code in RETRYABLE_STATUSES:
            raise _Retryable(f"HTTP {response.status_code}: {message}")
        raise _Refused(response.status_code, message)

    def _finish(self, batch: list[_Line] | _State, answer: StateAnswer,
                refused: _Refused | None) -> None:
        """Take a delivered (or refused) item off the queue."""
        if self._failing_since is not None:
            self._diagnose(f"reached the API at {self._base} again; sending what was kept")
            self._failing_since = None
        with self._cond:
            if isinstance(batch, _State):
                self._queue.popleft()
                batch.answer = answer
                batch.done.set()
                return
            for _ in batch:
                self._queue.popleft()
            self._lines_queued -= len(batch)
        if refused is not None:
            self._diagnose(f"the API refused {len(batch)} log lines "
                           f"(HTTP {refused.status}: {refused.message}); here they are")
            self._write_diagnostic_lines(batch)

    def _failing(self, exc: Exception) -> bool:
        """Note a failed delivery; True when it is time to give up on the API."""
        now = time.monotonic()
        reason = str(exc) if isinstance(exc, _Retryable) else type(exc).__name__
        if self._failing_since is None:
            self._failing_since = now
            with self._cond:
                queued = self._lines_queued
            self._diagnose(f"cannot reach the API at {self._base} ({reason}); keeping "
                           f"{queued} log lines and the states, retrying with backoff")
            return False
        if now - self._failing_since < self.settings.give_up_seconds:
            return False
        self._diagnose(f"gave up on the API at {self._base} after "
                       f"{self.settings.give_up_seconds:.0f}s ({reason}); logs go to stderr")
        with self._cond:
            self._offline = True
            items = list(self._queue)
            self._queue.clear()
            self._lines_queued = 0
        self._write_diagnostic_lines([item for item in items if isinstance(item, _Line)])
        for item in items:
            if isinstance(item, _State):
                item.answer = StateAnswer(False, message=f"API unreachable ({reason})")
                item.done.set()
        return True

    def _sleep(self, seconds: float) -> None:
        """Wait before a retry (a close() does not cut it short: it waits for delivery)."""
        time.sleep(seconds)

    # ------------------------------------------------------------------ stderr

    def _drop_oldest_line(self) -> None:
        for index, item in enumerate(self._queue):
            if isinstance(item, _Line):
                del self._queue[index]
                self._lines_queued -= 1
                self._dropped += 1
                return

    def _diagnose(self, text: str) -> None:
        self._write(f"pushpool execute: {text}\n")

    def _write_diagnostic_lines(self, lines: list[_Line]) -> None:
        self._write("".join(f"{line.message}\n" for line in lines))

    def _write(self, text: str) -> None:
        try:
            self._diagnostics.write(text)
            self._diagnostics.flush()
        except (OSError, ValueError):
            pass  # stderr closed: nothing else is left to tell


class _Retryable(Exception):
    pass


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict) and "message" in body:
        return str(body["message"])
    return response.text[:200]
