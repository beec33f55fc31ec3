"""Google Cloud Run jobs push pools (``cloud-run:push``): one Cloud Run job per deployment
and template, one execution per run attempt, no worker in between.

``adapter`` holds the contract's calls; ``config`` the pool template and its pydantic
model; ``jobs`` the job body, its content hash and the run overrides; ``status`` the
documented state mapping; ``logs`` the Cloud Logging cursor; ``events`` Pub/Sub and
Eventarc deliveries and their OIDC check; ``provision`` what ``--provision-infra`` makes
and removes; ``connection`` and ``errors`` the Google SDK plumbing, which imports the SDK
only when a call is made. The run_job token bucket is the shared ``providers.ratelimit``.
"""

from providers.cloud_run.adapter import PROVIDER, CloudRunProvider, CloudRunSettings

__all__ = ["PROVIDER", "CloudRunProvider", "CloudRunSettings"]
