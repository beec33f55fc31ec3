"""A fake Modal control plane for tests: the real ``modal`` client talks to it over gRPC.

``FakeModal().start()`` serves on 127.0.0.1 and returns the URL to use as the client's
server URL. See ``server`` (strict recording gRPC plumbing) and ``backend`` (state and
the RPCs the adapter's calls make).
"""

from tests.fakes.modal.backend import DEPRECATED_MESSAGE, FakeModal, FakeSandbox
from tests.fakes.modal.server import Call, GrpcFake, fake_jwt

__all__ = ["DEPRECATED_MESSAGE", "Call", "FakeModal", "FakeSandbox", "GrpcFake", "fake_jwt",
           "shared_fake"]

_shared: FakeModal | None = None


def shared_fake() -> FakeModal:
    """One started fake per test process, stopped at exit; tests ``reset()`` it."""
    global _shared
    if _shared is None:
        import atexit

        _shared = FakeModal()
        _shared.start()
        atexit.register(_shared.stop)
    return _shared
