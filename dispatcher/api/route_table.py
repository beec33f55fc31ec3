"""THE route table: every endpoint of the API, registered and documented from this list."""

from __future__ import annotations

from dispatcher.api import routes_deployments as deployments
from dispatcher.api import routes_events as events
from dispatcher.api import routes_meta as meta
from dispatcher.api import routes_metrics as metrics
from dispatcher.api import routes_pools as pools
from dispatcher.api import routes_provision as provision
from dispatcher.api import routes_runs as runs
from dispatcher.api import routes_runtime as runtime
from dispatcher.api import routes_webhooks as webhooks
from dispatcher.api.routing import QueryParam, Route
from dispatcher.api.schemas import (
    DeploymentApplied,
    Health,
    PoolType,
    ProvisionOptionInfo,
    ProvisionPlanRequest,
    ProvisionPlanView,
    WebhookPayload,
)
from dispatcher.models import (
    Deployment,
    DeploymentApply,
    DeploymentUpdate,
    LogEntry,
    Run,
    RunCreate,
    WorkPool,
    WorkPoolCreate,
    WorkPoolUpdate,
    WorkQueue,
    WorkQueueCreate,
    WorkQueueUpdate,
)
from dispatcher.store.run_ids import RUN_REF_PATTERN
from dispatcher.webhooks.models import (
    HookAccepted,
    SecretRotation,
    Webhook,
    WebhookCreate,
    WebhookSecret,
)

# Past these the databases' integers overflow (SQLite and PostgreSQL bigint: 2**63 - 1).
MAX_OFFSET = 1_000_000_000
MAX_LOG_ID = 2**63 - 1
POOL_FILTER = QueryParam("pool", "str", "Only this work pool's items")
LIMIT = QueryParam("limit", "int", "At most this many items", default=50, minimum=1,
                   maximum=1000)
OFFSET = QueryParam("offset", "int", "Skip this many items", default=0, minimum=0,
                    maximum=MAX_OFFSET)
PREVIEW_LIMIT = QueryParam("limit", "int", "At most this many runs", default=20, minimum=1,
                           maximum=1000)
STATE = QueryParam("state", "state", "Only runs in this state")
DEAD_LETTER = QueryParam("dead_letter", "bool",
                         "Only dead letters: runs that ended FAILED without reaching their "
                         "provider", default=False)
DEPLOYMENT_FILTER = QueryParam("deployment", "str",
                               "Only this deployment's runs: flow/deployment or its id")
FLOW_FILTER = QueryParam("flow", "str", "Only this flow's deployments")
LOGS_AFTER = QueryParam("after", "int", "Only entries with a larger id (the last id you read)",
                        default=0, minimum=0, maximum=MAX_LOG_ID)
CASCADE = QueryParam("cascade", "bool",
                     "Also delete the pool's deployments with their schedules and scheduled "
                     "runs (finished runs stay)", default=False)
DEPLOYMENTS_CONFIRMED = QueryParam(
    "deployments", "int", "With cascade: how many deployments the caller was shown; refused "
    "(409) if the pool has another number by then", minimum=0, maximum=MAX_OFFSET)
LOGS_LIMIT = QueryParam("limit", "int", "At most this many entries", default=1000, minimum=1,
                        maximum=1000)
LOGS_TAIL = QueryParam("tail", "bool", "The last `limit` entries instead of the first "
                      "(still oldest first)", default=False)

OBJECT = {"type": "object", "additionalProperties": True}
RUN_REF = {"id": {"type": "string", "pattern": RUN_REF_PATTERN,
                  "description": "The run's id or its first characters (4 or more)"}}

POOLS = "/api/work-pools"
POOL = "/api/work-pools/{pool}"
QUEUE = "/api/work-pools/{pool}/queues/{queue}"
DEPLOYMENT = "/api/deployments/{flow}/{name}"
WEBHOOK = "/api/webhooks/{webhook}"

ROUTES: tuple[Route, ...] = (
    # server
    Route("GET", "/api/health", meta.health, "Liveness and database reachability",
          response=Health, public=True),
    Route("GET", "/api/openapi.json", meta.openapi_json, "This API's OpenAPI 3.1 document",
          response_schema=OBJECT),
    Route("GET", "/api/pool-types", meta.list_pool_types, "The pool types this server knows",
          response=PoolType, many=True),
    Route("GET", "/api/pool-types/{type}/base-job-template", meta.get_base_job_template,
          "A pool type's default base job template", response_schema=OBJECT, errors=(422,)),
    Route("GET", "/api/pool-types/{type}/provision-options", provision.provision_options,
          "The options a pool type's infrastructure provisioning takes (none: it has none)",
          response=ProvisionOptionInfo, many=True, errors=(422,)),
    Route("POST", "/api/pool-types/{type}/provision-plan", provision.provision_plan,
          "What provisioning a pool's infrastructure would make, with the server's own "
          "cloud identity; nothing is changed", body=ProvisionPlanRequest,
          response=ProvisionPlanView, errors=(409, 502)),
    # work pools
    Route("GET", POOLS, pools.list_pools, "List work pools", response=WorkPool, many=True),
    Route("POST", POOLS, pools.create_pool,
          "Create a work pool (and its default queue); with provision, first make its "
          "cloud infrastructure as the confirmed plan says (409 if the plan changed)",
          body=WorkPoolCreate, response=WorkPool, status=201, errors=(409, 502)),
    Route("GET", POOL, pools.get_pool, "Read a work pool", response=WorkPool),
    Route("PATCH", POOL, pools.update_pool, "Change a work pool", body=WorkPoolUpdate,
          response=WorkPool),
    Route("DELETE", POOL, pools.delete_pool,
          "Delete a work pool and its queues: refused while it has active runs, or "
          "deployments unless cascade=true; its finished runs stay",
          status=204, errors=(409,), query=(CASCADE, DEPLOYMENTS_CONFIRMED)),
    Route("POST", POOL + "/pause", pools.pause_pool, "Stop dispatching the pool's runs",
          response=WorkPool),
    Route("POST", POOL + "/resume", pools.resume_pool, "Dispatch the pool's runs again",
          response=WorkPool),
    Route("GET", POOL + "/preview", pools.preview_pool, "The pool's next scheduled runs",
          response=Run, many=True, query=(PREVIEW_LIMIT,)),
    # work queues
    Route("GET", POOL + "/queues", pools.list_pool_queues, "List a pool's queues",
          response=WorkQueue, many=True),
    Route("POST", POOL + "/queues", pools.create_queue, "Create a queue in a pool",
          body=WorkQueueCreate, response=WorkQueue, status=201, errors=(409,)),
    Route("GET", QUEUE, pools.get_queue, "Read a queue", response=WorkQueue),
    Route("PATCH", QUEUE, pools.update_queue, "Change a queue", body=WorkQueueUpdate,
          response=WorkQueue),
    Route("DELETE", QUEUE, pools.delete_queue,
          "Delete a queue (not 'default', not one in use)", status=204, errors=(409,)),
    Route("GET", "/api/work-queues", pools.list_all_queues, "List the queues of every pool",
          response=WorkQueue, many=True, query=(POOL_FILTER,), errors=(404,)),
    # deployments ("id/{id}" before "{flow}/{name}" so that it wins the match)
    Route("GET", "/api/deployments", deployments.list_deployments, "List deployments",
          response=Deployment, many=True, query=(POOL_FILTER, FLOW_FILTER)),
    Route("PUT", "/api/deployments", deployments.apply_deployment,
          "Create or update a deployment (keyed by flow_name and name)", body=DeploymentApply,
          response=DeploymentApplied, status=201, other_statuses={200: "Updated"},
          errors=(409,)),
    Route("GET", "/api/deployments/id/{id}", deployments.get_deployment_by_id,
          "Read a deployment by its id", response=Deployment),
    Route("GET", DEPLOYMENT, deployments.get_deployment, "Read a deployment",
          response=Deployment),
    Route("PATCH", DEPLOYMENT, deployments.update_deployment, "Change a deployment",
          body=DeploymentUpdate, response=Deployment),
    Route("DELETE", DEPLOYMENT, deployments.delete_deployment, "Delete a deployment",
          status=204, errors=(409,)),
    Route("POST", DEPLOYMENT + "/runs", deployments.create_run, "Start a run of a deployment",
          body=RunCreate, response=Run, status=201,
          other_statuses={200: "The Idempotency-Key was seen before: the same run"},
          idempotency_key=True),
    Route("POST", "/api/webhooks/deployments/{flow}/{name}", deployments.webhook,
          "Start a run now from any JSON object; its 'parameters' become the run's",
          body=WebhookPayload, response=Run, status=202, idempotency_key=True),
    # webhooks as objects, and their signed deliveries (the webhook's secret, not the token)
    Route("GET", "/api/webhooks", webhooks.list_webhooks, "List webhooks", response=Webhook,
          many=True),
    Route("POST", "/api/webhooks", webhooks.create_webhook,
          "Create a webhook for a deployment: its address and its secret, shown this once",
          body=WebhookCreate, response=WebhookSecret, status=201, errors=(409,)),
    Route("GET", WEBHOOK, webhooks.get_webhook, "Read a webhook (never its secret)",
          response=Webhook),
    Route("DELETE", WEBHOOK, webhooks.delete_webhook,
          "Delete a webhook; its address answers 404 from now on", status=204),
    Route("POST", WEBHOOK + "/rotate-secret", webhooks.rotate_webhook_secret,
          "A new secret, shown this once; the old one is accepted for grace_seconds more",
          body=SecretRotation, response=WebhookSecret),
    Route("POST", WEBHOOK + "/disable", webhooks.disable_webhook,
          "Refuse the webhook's deliveries (404) until it is enabled", response=Webhook),
    Route("POST", WEBHOOK + "/enable", webhooks.enable_webhook,
          "Take the webhook's deliveries again", response=Webhook),
    Route("POST", "/hooks/{slug}", webhooks.deliver_hook,
          "A webhook delivery: signed as its webhook's scheme says, its JSON body mapped "
          "to the parameters of a run started now", request_schema=webhooks.REQUEST_SCHEMA,
          response=HookAccepted, status=202, errors=(401, 409, 415), public=True,
          signed_delivery=True),
    # provider events (authenticated by their own shared secret, not the API token)
    Route("POST", "/api/events/aws/ecs", events.ecs_task_state_change,
          "An EventBridge 'ECS Task State Change' event, as AWS sends it",
          request_schema=events.REQUEST_SCHEMA, response=events.ProviderEventResult,
          status=202, other_statuses={200: "A handshake, answered as the sender asks"},
          errors=(401, 403, 404), public=True, events_secret=True),
    Route("POST", "/api/events/{provider}", events.provider_events,
          "A provider's pushed state-change delivery (provider: a pool type or its short "
          "name, e.g. ecs), authenticated by that provider's adapter",
          request_schema=events.REQUEST_SCHEMA, response=events.ProviderEventResult,
          status=202, other_statuses={200: "A handshake, answered as the sender asks"},
          errors=(401, 403, 404), public=True, events_secret=True),
    # runs
    Route("GET", "/api/runs", runs.list_runs, "List runs", response=Run,
          many=True, query=(STATE, POOL_FILTER, DEPLOYMENT_FILTER, DEAD_LETTER, LIMIT, OFFSET),
          errors=(404,)),  # the deployment filter names one that does not exist
    Route("GET", "/api/runs/{id}", runs.get_run, "Read a run with its state history",
          response=Run, errors=(422,), path_schemas=RUN_REF),
    Route("POST", "/api/runs/{id}/cancel", runs.cancel_run, "Cancel a run", response=Run,
          errors=(409, 422), path_schemas=RUN_REF),
    Route("POST", "/api/runs/{id}/resubmit", runs.resubmit_run,
          "Resubmit a finished run (a dead letter, say) as a new run with the same parameters "
          "and job variables, linked by resubmitted_from", response=Run, status=201,
          other_statuses={200: "Resubmitted before: the run made then"}, errors=(409, 422),
          path_schemas=RUN_REF),
    Route("GET", "/api/runs/{id}/logs", runs.read_logs, "Read a run's log lines in order",
          response=LogEntry, many=True, query=(LOGS_AFTER, LOGS_LIMIT, LOGS_TAIL),
          path_schemas=RUN_REF),
    # the in-container runtime (`pushpool execute`), with the run's own token
    Route("POST", "/api/runs/{id}/state", runtime.report_state,
          "The run's runtime reports RUNNING, or COMPLETED with its result, or FAILED",
          body=runtime.RunStateReport, response=Run, errors=(403, 409), run_token=True,
          authorize=runtime.authorize),
    Route("POST", "/api/runs/{id}/logs", runtime.append_logs,
          "The run's runtime sends log lines, in order", body=runtime.RuntimeLogBatch,
          response=runtime.LogsAccepted, errors=(403,), run_token=True,
          authorize=runtime.authorize),
    # monitoring
    Route("GET", "/metrics", metrics.metrics_text,
          "Prometheus metrics: dispatch latency, submits, retries, throttles, lease expiries, "
          "breaker state, dead letters, runs by pool and state",
          response_schema=metrics.TEXT_SCHEMA, media_type=metrics.CONTENT_TYPE),
)
