"""Azure Container Instances push pools (``azure-container-instance:push``): one
container group per run attempt, no worker in between.

``adapter`` holds the contract's calls; ``config`` the pool template and its pydantic
model; ``body`` the container group body and name; ``status`` the documented state
mapping; ``logs`` the log cursor; ``events`` Event Grid deliveries; ``ratelimit`` the
create and delete budgets; ``provision`` what ``--provision-infra`` makes and removes;
``arm`` the Azure SDK plumbing, which imports the SDK only when a call is made.
"""

from providers.aci.adapter import PROVIDER, AciProvider, AciSettings

__all__ = ["PROVIDER", "AciProvider", "AciSettings"]
