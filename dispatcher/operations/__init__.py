"""The rules above the store: what the API, the engine and the serverless tick all call.

The store reads and writes; these modules decide. ``pools`` and ``deployments`` check
templates and job variables against the pool type's adapter, ``provisioning`` plans and
applies a cloud pool's infrastructure (for the CLI and the API), ``events`` applies pushed
provider events to runs, ``webhooks`` checks deliveries and starts their runs (sealing
with the store's secret box, ``db.secrets``), ``secrets`` rotates the key. Each function is
plain and awaits the store; none holds state.
"""

from dispatcher.operations import (
    deployments,
    events,
    pools,
    provisioning,
    runs,
    secrets,
    webhooks,
)

__all__ = ["deployments", "events", "pools", "provisioning", "runs", "secrets", "webhooks"]
