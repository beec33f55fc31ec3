"""A strict, recording gRPC server speaking Modal's own protocol (grpclib + modal_proto).

``GrpcFake`` builds one servicer per service from the grpclib bases the ``modal`` package
ships (``ModalClientBase`` for the control plane, ``TaskCommandRouterBase`` for V2 sandbox
stdio), giving every abstract RPC one generic method. That method records the call, then
hands it to the handler registered under the RPC's name (router RPCs are prefixed
``router.``), or refuses it with UNIMPLEMENTED and remembers the refusal: a client upgrade
that starts calling a new RPC fails a test by name instead of passing by accident.

The server runs on its own event loop in a daemon thread (the modal client runs its own
loop thread through synchronicity), on 127.0.0.1 and an ephemeral port.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpclib.const
import grpclib.server
from grpclib import GRPCError, Status
from modal_proto import api_grpc, task_command_router_grpc

ROUTER = "router."
Handler = Callable[[Any, dict[str, str]], Any]


def fake_jwt(ttl: int = 3600, **claims: Any) -> str:
    """An unsigned JWT with an ``exp`` claim: the modal client only reads its expiry."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    header, body = {"alg": "none", "typ": "JWT"}, {"exp": int(time.time()) + ttl, **claims}
    return f"{part(header)}.{part(body)}."


@dataclass(frozen=True)
class Call:
    """One RPC the fake received: its name, request message, metadata, and the wall-clock
    time its request message arrived."""

    name: str
    request: Any
    metadata: dict[str, str] = field(repr=False)
    received: float = 0.0


@dataclass
class Fault:
    """Answer the next ``times`` calls of an RPC with this gRPC status and message."""

    status: Status
    message: str
    times: int = 1


class GrpcFake:
    """The generic part: servicers, recording, strictness, injected faults, the thread."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.handlers: dict[str, Handler] = {}
        self.unimplemented: list[str] = []  # RPCs the client made that no handler answers
        self.errors: list[str] = []  # handler crashes (bugs in the fake)
        self.faults: dict[str, Fault] = {}
        # Checked before every RPC; returning an error refuses the call (e.g. a deprecated
        # client version, which Modal refuses on every call).
        self.gate: Callable[[str, dict[str, str]], GRPCError | None] | None = None
        self.port = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._server: grpclib.server.Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._info: dict[str, grpclib.const.Handler] = {}

    # ------------------------------------------------------------------ inspection

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rpc_names(self) -> list[str]:
        return [c.name for c in list(self.calls)]

    def calls_of(self, name: str) -> list[Any]:
        """The requests of every call to ``name``, in order."""
        return [c.request for c in list(self.calls) if c.name == name]

    def count(self, name: str) -> int:
        return len(self.calls_of(name))

    def fail_next(self, rpc: str, status: Status, message: str, times: int = 1) -> None:
        """Refuse the next ``times`` calls of ``rpc`` as Modal would, with ``message``."""
        with self._lock:
            self.faults[rpc] = Fault(status, message, times)

    def _take_fault(self, name: str) -> Fault | None:
        with self._lock:
            fault = self.faults.get(name)
            if fault is None:
                return None
            fault.times -= 1
            if fault.times <= 0:
                del self.faults[name]
            return fault

    # ------------------------------------------------------------------ servicers

    def _servicer(self, base: type, prefix: str) -> Any:
        fake = self
        names = sorted(base.__abstractmethods__)  # type: ignore[attr-defined]

        def make(short: str) -> Callable[..., Any]:
            name = prefix + short

            async def method(_self: Any, stream: grpclib.server.Stream[Any, Any]) -> None:
                info = fake._info[name]
                request = await stream.recv_message()
                metadata = {k: v for k, v in (stream.metadata or {}).items()
                            if isinstance(v, str)}
                fake.calls.append(Call(name, request, metadata, time.time()))
                if fake.gate is not None:
                    refused = fake.gate(name, metadata)
                    if refused is not None:
                        raise refused
                fault = fake._take_fault(name)
                if fault is not None:
                    raise GRPCError(fault.status, fault.message)
                handler = fake.handlers.get(name)
                if handler is None:
                    fake.unimplemented.append(name)
                    raise GRPCError(Status.UNIMPLEMENTED,
                                    f"fake Modal server: {name} is not implemented; the modal "
                                    "client made a call tests/fakes/modal does not know")
                try:
                    answer = handler(request, metadata)
                    # inspect.isawaitable, not asyncio.iscoroutine: on 3.11 the latter is
                    # also true for plain generators, which streaming handlers return.
                    if inspect.isawaitable(answer):
                        answer = await answer
                    if info.cardinality is grpclib.const.Cardinality.UNARY_STREAM:
                        if hasattr(answer, "__aiter__"):
                            async for item in answer:
                                await stream.send_message(item)
                        else:
                            for item in answer or ():
                                await stream.send_message(item)
                    else:
                        await stream.send_message(answer)
                except (GRPCError, asyncio.CancelledError):
                    raise
                except Exception as exc:
                    # A bug in the fake, not an answer Modal would give: keep it for the
                    # test to report (the client only sees INTERNAL and retries).
                    fake.errors.append(f"{name}: {type(exc).__name__}: {exc}")
                    raise GRPCError(Status.INTERNAL, f"fake Modal server bug in {name}: "
                                    f"{type(exc).__name__}: {exc}") from exc

            method.__name__ = short
            return method

        cls = type(f"Fake{base.__name__}", (base,), {n: make(n) for n in names})
        servicer = cls()
        for path, handler in servicer.__mapping__().items():
            self._info[prefix + path.rsplit("/", 1)[1]] = handler
        return servicer

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> str:
        """Serve on 127.0.0.1:<ephemeral>; returns the URL to give the modal client."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self.loop = loop
            asyncio.set_event_loop(loop)
            try:
                self._server = grpclib.server.Server([
                    self._servicer(api_grpc.ModalClientBase, ""),
                    self._servicer(task_command_router_grpc.TaskCommandRouterBase, ROUTER),
                ])
                loop.run_until_complete(self._server.start("127.0.0.1", 0))
                sockets = self._server._server.sockets  # type: ignore[union-attr]
                self.port = sockets[0].getsockname()[1]
            except BaseException as exc:  # reported to the starting thread
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-modal", daemon=True)
        self._thread.start()
        if not ready.wait(10) or failure:
            raise RuntimeError(f"fake Modal server did not start: {failure}")
        return self.url

    def stop(self) -> None:
        if self.loop is None or self._server is None:
            return
        server, loop = self._server, self.loop

        async def close() -> None:
            server.close()
            await server.wait_closed()

        try:
            asyncio.run_coroutine_threadsafe(close(), loop).result(5)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(5)
            self._server = None
            self.loop = None
