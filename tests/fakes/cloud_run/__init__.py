"""A fake of the Google APIs the cloud-run:push adapter uses, on one 127.0.0.1 port: the
Cloud Run Admin API v2 with its operations (``run_api``), Cloud Logging entries:list
(``logging_api``), the provisioning APIs (``provisioning``: Service Usage, Artifact
Registry, IAM, Resource Manager) and an OIDC key set (``oidc``). The real client
libraries reach it by configuration (``api_endpoint = fake.url``, which implies anonymous
credentials), never by patching.

``shared_fake()`` starts one per test session (``reset()`` it per test).
"""

from __future__ import annotations

from tests.fakes.cloud_run.logging_api import LoggingApi
from tests.fakes.cloud_run.oidc import Oidc, SigningKey
from tests.fakes.cloud_run.provisioning import ProvisioningApi
from tests.fakes.cloud_run.run_api import CloudRunApi
from tests.fakes.cloud_run.server import FakeServer

__all__ = ["FakeGoogle", "SigningKey", "shared_fake"]

PROJECT = "pushpool-test"
REGION = "us-central1"


class FakeGoogle:
    def __init__(self) -> None:
        self.server = FakeServer()
        self.run = CloudRunApi(self.server)
        self.logging = LoggingApi(self.server)
        self.provisioning = ProvisioningApi(self.server)
        self.oidc = Oidc(self.server)
        self.project, self.region = PROJECT, REGION

    def start(self) -> FakeGoogle:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    @property
    def url(self) -> str:
        return self.server.url

    def reset(self) -> None:
        self.run.reset()
        self.logging.reset()
        self.provisioning.reset()
        self.server.clear_faults()
        self.server.reset_counts()


_shared: FakeGoogle | None = None


def shared_fake() -> FakeGoogle:
    """One fake per test session, started on first use (a daemon thread)."""
    global _shared
    if _shared is None:
        _shared = FakeGoogle().start()
    return _shared
