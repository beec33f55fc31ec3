"""AWS ECS Fargate push pools (``ecs:push``): one task per run, no worker in between.

``adapter`` holds the contract's calls; ``config`` the pool template and its pydantic
model; ``taskdef`` the task definitions cached by content; ``events`` the task states
and EventBridge events; ``logs`` CloudWatch Logs; ``network`` the default VPC lookup;
``provision`` and ``deprovision`` what ``--provision-infra`` makes; ``aws`` the boto3
plumbing, which imports boto3 only when a call is made.
"""

from providers.ecs.adapter import (
    PROVIDER,
    EcsProvider,
    EcsSettings,
    client_token,
    started_by_for,
)

__all__ = ["PROVIDER", "EcsProvider", "EcsSettings", "client_token", "started_by_for"]
