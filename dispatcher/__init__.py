"""pushpool: a push-pool dispatcher for serverless container jobs.

``from dispatcher import flow`` is the Python SDK's entry point (see dispatcher/flows.py).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # The SDK is imported lazily so ``pushpool --help`` stays fast.
    if name == "flow":
        from dispatcher.flows import flow

        return flow
    raise AttributeError(name)
