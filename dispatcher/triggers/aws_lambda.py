"""The AWS Lambda entry point: ``dispatcher.triggers.aws_lambda.handler``.

One function takes every event pushpool needs on AWS:

- a timer: an EventBridge rule's "Scheduled Event", or an EventBridge Scheduler schedule
  whose input is ``{"pushpool": "tick"}``: one tick within the invocation's remaining time;
- HTTP: API Gateway REST (payload 1.0), HTTP API (2.0) and Function URL (2.0) events,
  forwarded to the API in-process (``host.py``), answered in the payload's own format;
- "ECS Task State Change" events that an EventBridge rule hands to the function: read by
  the ECS adapter and applied like ``POST /api/events/aws/ecs``; AWS authenticated them,
  so the shared secret of an HTTP delivery is not asked for.

Nothing here imports boto3: the ECS adapter loads it only for its own calls.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import urlencode

from dispatcher.triggers.host import HttpRequest, HttpResponse, get_host, tick_budget

_TEXT_TYPES = ("application/json", "text/", "application/problem+json")


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The Lambda handler (see the module docstring)."""
    host = get_host()
    remaining = _remaining_seconds(context)
    if not isinstance(event, dict):
        raise ValueError("event: expected a JSON object (an EventBridge, API Gateway or "
                         "Function URL event)")
    if _is_http_v2(event):
        response = host.run(host.forward(_request_v2(event), remaining))
        return _response_v2(response)
    if "httpMethod" in event and "requestContext" in event:
        response = host.run(host.forward(_request_v1(event), remaining))
        return _response_v1(response)
    if event.get("source") == "aws.ecs":
        return _ecs_event(event, remaining)
    if event.get("detail-type") == "Scheduled Event" or event.get("pushpool") == "tick":
        summary = host.run(host.tick(tick_budget(host.settings, remaining)))
        return summary.as_dict()
    raise ValueError("event: not an event pushpool takes; expected an EventBridge "
                     '"Scheduled Event", an EventBridge Scheduler input {"pushpool": "tick"}, '
                     'an API Gateway or Function URL request, or an "ECS Task State Change"')


def _remaining_seconds(context: Any) -> float:
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        raise ValueError("context: expected the Lambda context object")
    return float(remaining()) / 1000


def _ecs_event(event: dict[str, Any], remaining: float) -> dict[str, Any]:
    from providers import registry
    from providers.base import TrustedEventSource

    host = get_host()
    provider = registry.get_provider("ecs:push")
    assert isinstance(provider, TrustedEventSource)
    delivery = provider.parse_trusted_event(event)
    outcomes = host.run(host.apply_events(delivery.events))
    answer: dict[str, Any] = {
        "applied": any(o.applied for o in outcomes), "note": delivery.note,
        "results": [{"applied": o.applied, "run_id": o.run_id,
                     "state": o.state.value if o.state else None, "reason": o.reason}
                    for o in outcomes]}
    if answer["applied"]:  # a run that ended freed a slot: claim what waited for it
        answer["tick"] = host.run(host.tick(tick_budget(host.settings, remaining))).as_dict()
    return answer


# ---------------------------------------------------------------------- HTTP payloads

def _is_http_v2(event: dict[str, Any]) -> bool:
    context = event.get("requestContext")
    return event.get("version") == "2.0" and isinstance(context, dict) and "http" in context


def _body(event: dict[str, Any]) -> bytes:
    body = event.get("body")
    if body is None:
        return b""
    if event.get("isBase64Encoded"):
        return base64.b64decode(body)
    return str(body).encode("utf-8")


def _request_v1(event: dict[str, Any]) -> HttpRequest:
    multi = event.get("multiValueHeaders") or {}
    headers = ([(k, v) for k, values in multi.items() for v in values or []] if multi
               else list((event.get("headers") or {}).items()))
    query_multi = event.get("multiValueQueryStringParameters") or {}
    query = (urlencode([(k, v) for k, values in query_multi.items() for v in values or []])
             if query_multi else urlencode(event.get("queryStringParameters") or {}))
    return HttpRequest(str(event["httpMethod"]), str(event.get("path") or "/"), query,
                       headers, _body(event))


def _request_v2(event: dict[str, Any]) -> HttpRequest:
    headers = list((event.get("headers") or {}).items())
    if event.get("cookies"):  # payload 2.0 moves them out of the headers
        headers.append(("cookie", "; ".join(event["cookies"])))
    http = event["requestContext"]["http"]
    return HttpRequest(str(http["method"]), str(event.get("rawPath") or http.get("path") or "/"),
                       str(event.get("rawQueryString") or ""), headers, _body(event))


def _encoded(response: HttpResponse) -> tuple[str, bool]:
    content_type = next((v for k, v in response.headers if k.lower() == "content-type"), "")
    if not response.body or content_type.startswith(_TEXT_TYPES):
        try:
            return response.body.decode("utf-8"), False
        except UnicodeDecodeError:
            pass
    return base64.b64encode(response.body).decode("ascii"), True


def _response_v1(response: HttpResponse) -> dict[str, Any]:
    body, is_base64 = _encoded(response)
    multi: dict[str, list[str]] = {}
    for key, value in response.headers:
        multi.setdefault(key, []).append(value)
    return {"statusCode": response.status, "multiValueHeaders": multi, "body": body,
            "isBase64Encoded": is_base64}


def _response_v2(response: HttpResponse) -> dict[str, Any]:
    body, is_base64 = _encoded(response)
    headers: dict[str, str] = {}
    cookies = []
    for key, value in response.headers:
        if key.lower() == "set-cookie":
            cookies.append(value)
        else:
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
    answer: dict[str, Any] = {"statusCode": response.status, "headers": headers,
                              "body": body, "isBase64Encoded": is_base64}
    if cookies:
        answer["cookies"] = cookies
    return answer
