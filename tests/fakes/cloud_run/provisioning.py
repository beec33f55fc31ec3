"""The fake provisioning APIs: Service Usage (enable an API), Artifact Registry
(repositories and their IAM policies), IAM (service accounts, keys, their policies) and
Resource Manager (the project's IAM policy), in the REST shapes Google documents.

Long-running operations (enable, repository create/delete) answer ``done: false`` and
complete on the first poll. ``setIamPolicy`` checks the etag like Google (409 ABORTED on
a stale one). A key's ``privateKeyData`` is a base64 key file whose private key is fake.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import uuid
from typing import Any

from tests.fakes.cloud_run.server import Answer, ApiError, FakeServer

DEFAULT_ENABLED = ("logging.googleapis.com",)


class ProvisioningApi:
    def __init__(self, server: FakeServer):
        self.server = server
        self.enabled: dict[str, set[str]] = {}
        self.repositories: dict[str, dict[str, Any]] = {}
        self.accounts: dict[str, dict[str, Any]] = {}
        self.keys: dict[str, list[dict[str, Any]]] = {}
        self.policies: dict[str, dict[str, Any]] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        r = server.route
        project = r"projects/([^/]+)"
        r("GET", rf"/v1/{project}/services/([^/:]+)", "services.get", self._get_service)
        r("POST", rf"/v1/{project}/services/([^/:]+):enable", "services.enable", self._enable)
        r("GET", r"/v1/(operations/[^/]+)", "serviceusage.operations.get", self._operation)
        r("GET", rf"/v1/({project}/locations/[^/]+/operations/[^/]+)",
          "artifactregistry.operations.get", self._operation)
        r("POST", rf"/v1/({project}/locations/([^/]+))/repositories",
          "repositories.create", self._create_repository)
        r("GET", rf"/v1/({project}/locations/[^/]+/repositories/[^/:]+):getIamPolicy",
          "repositories.getIamPolicy", self._get_policy)
        r("POST", rf"/v1/({project}/locations/[^/]+/repositories/[^/:]+):setIamPolicy",
          "repositories.setIamPolicy", self._set_policy)
        r("GET", rf"/v1/({project}/locations/[^/]+/repositories/[^/:]+)", "repositories.get",
          self._get_repository)
        r("DELETE", rf"/v1/({project}/locations/[^/]+/repositories/[^/:]+)",
          "repositories.delete", self._delete_repository)
        r("POST", rf"/v1/{project}/serviceAccounts", "serviceAccounts.create",
          self._create_account)
        r("GET", rf"/v1/{project}/serviceAccounts/([^/:]+)/keys", "keys.list", self._list_keys)
        r("POST", rf"/v1/{project}/serviceAccounts/([^/:]+)/keys", "keys.create",
          self._create_key)
        r("POST", rf"/v1/({project}/serviceAccounts/[^/:]+):getIamPolicy",
          "serviceAccounts.getIamPolicy", self._get_policy)
        r("POST", rf"/v1/({project}/serviceAccounts/[^/:]+):setIamPolicy",
          "serviceAccounts.setIamPolicy", self._set_policy)
        r("GET", rf"/v1/{project}/serviceAccounts/([^/:]+)", "serviceAccounts.get",
          self._get_account)
        r("DELETE", rf"/v1/{project}/serviceAccounts/([^/:]+)", "serviceAccounts.delete",
          self._delete_account)
        r("POST", rf"/v1/({project}):getIamPolicy", "projects.getIamPolicy", self._get_policy)
        r("POST", rf"/v1/({project}):setIamPolicy", "projects.setIamPolicy", self._set_policy)

    def reset(self) -> None:
        with self.server.lock:
            for store in (self.enabled, self.repositories, self.accounts, self.keys,
                          self.policies, self.operations):
                store.clear()

    def _op(self, name: str, response: dict[str, Any] | None = None) -> dict[str, Any]:
        op: dict[str, Any] = {"name": name, "done": False}
        self.operations[name] = {**op, "_response": response or {}}
        return op

    def _operation(self, m: re.Match[str], q: dict[str, list[str]], body: Any) -> Answer:
        op = self.operations.get(m.group(1))
        if op is None:
            raise ApiError(404, f"Operation {m.group(1)} not found.")
        op["done"] = True
        op["response"] = op.pop("_response", op.get("response", {}))
        return 200, {k: v for k, v in op.items() if not k.startswith("_")}

    # ------------------------------------------------------------------ services

    def _get_service(self, m: re.Match[str], q: dict[str, list[str]], body: Any) -> Answer:
        project, service = m.group(1), m.group(2)
        on = service in self.enabled.get(project, set()) or service in DEFAULT_ENABLED
        return 200, {"name": f"projects/123456/services/{service}",
                     "state": "ENABLED" if on else "DISABLED"}

    def _enable(self, m: re.Match[str], q: dict[str, list[str]], body: Any) -> Answer:
        self.enabled.setdefault(m.group(1), set()).add(m.group(2))
        return 200, self._op(f"operations/acf.p2-{uuid.uuid4().hex[:12]}")

    # ------------------------------------------------------------------ repositories

    def _repository(self, name: str) -> dict[str, Any]:
        repo = self.repositories.get(name)
        if repo is None:
            raise ApiError(404, f"Requested entity was not found: {name}")
        return repo

    def _create_repository(self, m: re.Match[str], q: dict[str, list[str]], body: Any) -> Answer:
        parent = m.group(1)
        repo_id = (q.get("repositoryId") or [""])[0]
        name = f"{parent}/repositories/{repo_id}"
        if name in self.repositories:
            raise ApiError(409, "the repository already exists", "ALREADY_EXISTS")
        if body.get("format") != "DOCKER":
            raise ApiError(400, "format: only DOCKER is supported by this fake")
        self.repositories[name] = {**copy.deepcopy(body), "name": name}
        return 200, self._op(f"{parent}/operations/{uuid.uuid4()}", self.repositories[name])

    def _get_repository(self, m: re.Match[str], q: dict[str, list[str]], body: Any) -> Answer:
        return 200, self._repository(m.group(1))

    def _delete_repository(self, m: re.Match[str], q: dict[str, list[str]], body: Any) -> Answer:
        name = m.group(1)
        self._repository(name)
        del self.repositories[name]
        self.policies.pop(name, None)
        parent = "/".join(name.split("/")[:4])
        return 200, self._op(f"{parent}/operations/{uuid.uuid4()}")

    # ------------------------------------------------------------------ service accounts

    def _account(self, email: str) -> dict[str, Any]:
        account = self.accounts.get(email)
        if account is None:
            raise ApiError(404, f"Unknown service account {email}")
        return account

    def _create_account(self, m: re.Match[str], q: dict[str, list[str]], body: Any) -> Answer:
        project, account_id = m.group(1), str(body.get("accountId") or "")
        if not re.fullmatch(r"[a-z][a-z0-9-]{4,28}[a-z0-9]", account_id):
            raise ApiError(400, f"Invalid accountId {account_id!r}: 6-30 characters.")
        email = f"{account_id}@{project}.iam.gserviceaccount.com"
        if email in self.accounts:
            raise ApiError(409, f"Service account {account_id} already exists.",
                           "ALREADY_EXISTS")
        details = body.get("serviceAccount") or {}
        self.accounts[email] = {"name": f"projects/{project}/serviceAccounts/{email}",
                                "projectId": project, "uniqueId": str(uuid.uuid4().int)[:21],
                                "email": email, "displayName": details.get("displayName", ""),
                                "description": details.get("description", ""),
                                "etag": "BwX=", "oauth2ClientId": "1"}
        return 200, self.accounts[email]

    def _get_account(self, m: re.Match[str], q: dict[str, list[str]], body: Any) -> Answer:
        return 200, self._account(m.group(2))

    def _delete_account(self, m: re.Match[str], q: dict[str, list[str]], body: Any) -> Answer:
        email = m.group(2)
        self._account(email)
        del self.accounts[email]
        self.keys.pop(email, None)
        self.policies.pop(f"projects/{m.group(1)}/serviceAccounts/{email}", None)
        return 200, {}

    def _list_keys(self, m: re.Match[str], q: dict[str, list[str]], body: Any) -> Answer:
        self._account(m.group(2))
        public = [{k: v for k, v in key.items() if k != "privateKeyData"}
                  for key in self.keys.get(m.group(2), [])]
        return 200, {"keys": public}

    def _create_key(self, m: re.Match[str], q: dict[str, list[str]], body: Any) -> Answer:
        project, email = m.group(1), m.group(2)
        self._account(email)
        key_id = uuid.uuid4().hex
        key_file = {"type": "service_account", "project_id": project,
                    "private_key_id": key_id,
                    "private_key": "-----BEGIN PRIVATE KEY-----\nFAKE\n-----END PRIVATE KEY-----\n",
                    "client_email": email, "client_id": "1",
                    "token_uri": "https://oauth2.googleapis.com/token"}
        key = {"name": f"projects/{project}/serviceAccounts/{email}/keys/{key_id}",
               "keyType": "USER_MANAGED", "keyAlgorithm": "KEY_ALG_RSA_2048",
               "privateKeyType": "TYPE_GOOGLE_CREDENTIALS_FILE",
               "privateKeyData": base64.b64encode(json.dumps(key_file).encode()).decode()}
        self.keys.setdefault(email, []).append(key)
        return 200, key

    # ------------------------------------------------------------------ IAM policies

    def _resource_exists(self, resource: str) -> None:
        if "/repositories/" in resource:
            self._repository(resource)
        elif "/serviceAccounts/" in resource:
            self._account(resource.rsplit("/", 1)[-1])

    def _get_policy(self, m: re.Match[str], q: dict[str, list[str]], body: Any) -> Answer:
        resource = m.group(1)
        self._resource_exists(resource)
        policy = self.policies.setdefault(resource, {"version": 1, "etag": "BwAA",
                                                     "bindings": []})
        return 200, copy.deepcopy(policy)

    def _set_policy(self, m: re.Match[str], q: dict[str, list[str]], body: Any) -> Answer:
        resource = m.group(1)
        self._resource_exists(resource)
        current = self.policies.get(resource, {"etag": "BwAA"})
        policy = copy.deepcopy(body.get("policy") or {})
        if policy.get("etag") and policy["etag"] != current.get("etag"):
            raise ApiError(409, "There were concurrent policy changes.", "ABORTED")
        policy["etag"] = base64.b64encode(uuid.uuid4().bytes[:6]).decode()
        self.policies[resource] = policy
        return 200, copy.deepcopy(policy)

    def members(self, resource: str, role: str) -> list[str]:
        for binding in (self.policies.get(resource) or {}).get("bindings") or []:
            if binding.get("role") == role:
                return list(binding.get("members") or [])
        return []
