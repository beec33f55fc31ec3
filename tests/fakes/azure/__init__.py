"""A fake Azure Resource Manager for the ACI adapter's tests: one HTTPS server on
127.0.0.1 with Microsoft Entra's token endpoint, Microsoft.ContainerInstance and the
resource providers ``--provision-infra`` uses. The real azure-mgmt-* and azure-identity
clients reach it by configuration only (endpoint, authority, CA bundle).

    fake = FakeAzure(); fake.start()        # once per session
    fake.reset()                            # per test
    fake.aci.start(rg, name); fake.aci.finish(rg, name, exit_code=3)
    fake.server.fail_next("containerGroups.create", 429, "TooManyRequests", retry_after=2)
"""

from __future__ import annotations

import uuid

from tests.fakes.azure.aci import FakeContainerInstance
from tests.fakes.azure.resources import FakeResources
from tests.fakes.azure.server import ArmError, ArmServer, Principal

__all__ = ["ArmError", "ArmServer", "FakeAzure", "Principal"]

SUBSCRIPTION = "00000000-0000-4000-8000-000000000001"
TENANT = "00000000-0000-4000-8000-0000000000aa"


class FakeAzure:
    def __init__(self) -> None:
        self.server = ArmServer()
        self.resources = FakeResources(self.server)
        self.aci = FakeContainerInstance(self.server, self.resources.resource_groups)
        self.subscription = SUBSCRIPTION
        self.tenant = TENANT
        self.client_id = str(uuid.uuid4())
        self.client_secret = f"s3cret-{uuid.uuid4().hex}"
        self.principal = self.server.add_principal(self.tenant, self.client_id,
                                                   self.client_secret)

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def ca_file(self) -> str:
        return self.server.ca_file

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    def reset(self) -> None:
        self.server.reset()
        self.resources.reset()
        self.aci.reset()


_shared: FakeAzure | None = None


def shared_fake() -> FakeAzure:
    """One started fake per test process (TLS set-up costs ~50 ms; shutdown up to 0.5 s),
    stopped at exit. Tests call ``reset()`` on it to start clean."""
    global _shared
    if _shared is None:
        import atexit

        _shared = FakeAzure()
        _shared.start()
        atexit.register(_shared.stop)
    return _shared
