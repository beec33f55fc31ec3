"""The fake ARM's other resource providers, the ones ``--provision-infra`` uses.

Resource groups (Microsoft.Resources: PUT, GET, HEAD, DELETE as a ``Location``-header
long-running operation, and the list of a group's resources), user-assigned managed
identities (Microsoft.ManagedIdentity), container registries (Microsoft.ContainerRegistry:
PUT as an ``Azure-AsyncOperation`` operation, globally unique names) and role
assignments (Microsoft.Authorization, at any scope).
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

from tests.fakes.azure.server import Answer, ArmError, ArmServer, Request

SUB = r"/subscriptions/(?P<sub>[^/]+)"
RG = SUB + r"/resourceGroups/(?P<rg>[^/]+)"
MSI = RG + r"/providers/Microsoft\.ManagedIdentity/userAssignedIdentities/(?P<name>[^/]+)"
ACR = RG + r"/providers/Microsoft\.ContainerRegistry/registries/(?P<name>[^/]+)"
ROLE = (r"(?P<scope>/subscriptions/.+?)/providers/Microsoft\.Authorization/roleAssignments/"
        r"(?P<name>[^/]+)")


class FakeResources:
    def __init__(self, server: ArmServer):
        self.server = server
        self.resource_groups: dict[tuple[str, str], dict[str, Any]] = {}
        self.identities: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.registries: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.role_assignments: dict[str, dict[str, Any]] = {}  # lower(id) -> assignment
        self.taken_registry_names: set[str] = set()  # names other tenants hold
        self.extra_resources: dict[tuple[str, str], list[dict[str, Any]]] = {}
        s, R = server, "Microsoft.Resources"
        s.route("PUT", RG, "resourceGroups.create", R, self._rg_put, "resourceGroups")
        s.route("GET", RG, "resourceGroups.get", R, self._rg_get, "resourceGroups")
        s.route("HEAD", RG, "resourceGroups.exists", R, self._rg_head, "resourceGroups")
        s.route("DELETE", RG, "resourceGroups.delete", R, self._rg_delete, "resourceGroups")
        s.route("GET", SUB + r"/operationresults/(?P<op>[^/]+)", "resourceGroups.deleteStatus",
                R, self._rg_delete_status, "operationresults")
        s.route("GET", RG + "/resources", "resources.list", R, self._rg_resources, "resources")
        M = "Microsoft.ManagedIdentity"
        s.route("PUT", MSI, "identities.create", M, self._msi_put, "userAssignedIdentities")
        s.route("GET", MSI, "identities.get", M, self._msi_get, "userAssignedIdentities")
        s.route("DELETE", MSI, "identities.delete", M, self._msi_delete,
                "userAssignedIdentities")
        C = "Microsoft.ContainerRegistry"
        s.route("PUT", ACR, "registries.create", C, self._acr_put, "registries")
        s.route("GET", ACR, "registries.get", C, self._acr_get, "registries")
        s.route("DELETE", ACR, "registries.delete", C, self._acr_delete, "registries")
        A = "Microsoft.Authorization"
        s.route("PUT", ROLE, "roleAssignments.create", A, self._role_put, "roleAssignments")
        s.route("GET", ROLE, "roleAssignments.get", A, self._role_get, "roleAssignments")
        s.route("DELETE", ROLE, "roleAssignments.delete", A, self._role_delete,
                "roleAssignments")
        self._deletes: dict[str, tuple[str, str]] = {}

    def reset(self) -> None:
        with self.server.lock:
            for store in (self.resource_groups, self.identities, self.registries,
                          self.role_assignments, self.extra_resources, self._deletes):
                store.clear()
            self.taken_registry_names.clear()

    def add_resource_group(self, sub: str, name: str, location: str = "eastus",
                           tags: dict[str, str] | None = None) -> None:
        with self.server.lock:
            self.resource_groups[(sub.lower(), name.lower())] = self._rg_body(
                sub, name, location, tags or {})

    # ------------------------------------------------------------------ resource groups

    @staticmethod
    def _rg_body(sub: str, name: str, location: str, tags: dict[str, str]) -> dict[str, Any]:
        return {"id": f"/subscriptions/{sub}/resourceGroups/{name}", "name": name,
                "type": "Microsoft.Resources/resourceGroups", "location": location,
                "tags": tags, "properties": {"provisioningState": "Succeeded"}}

    def _rg_key(self, request: Request) -> tuple[str, str]:
        return request.group("sub").lower(), request.group("rg").lower()

    def _rg_put(self, request: Request) -> Answer:
        body = request.body or {}
        if not body.get("location"):
            raise ArmError(400, "LocationRequired", "The location property is required for "
                           "this definition.")
        key = self._rg_key(request)
        existing = self.resource_groups.get(key)
        if existing is not None:
            existing["tags"] = body.get("tags") or {}
            return 200, existing, {}
        made = self._rg_body(request.group("sub"), request.group("rg"),
                             str(body["location"]), body.get("tags") or {})
        self.resource_groups[key] = made
        return 201, made, {}

    def _rg_get(self, request: Request) -> Answer:
        group = self.resource_groups.get(self._rg_key(request))
        if group is None:
            raise ArmError(404, "ResourceGroupNotFound",
                           f"Resource group '{request.group('rg')}' could not be found.")
        return 200, group, {}

    def _rg_head(self, request: Request) -> Answer:
        return (204 if self._rg_key(request) in self.resource_groups else 404), None, {}

    def _rg_delete(self, request: Request) -> Answer:
        key = self._rg_key(request)
        if key not in self.resource_groups:
            raise ArmError(404, "ResourceGroupNotFound",
                           f"Resource group '{request.group('rg')}' could not be found.")
        op = f"RESOURCEGROUPDELETIONJOB-{uuid.uuid4().hex[:12].upper()}"
        self._deletes[op] = key
        location = (f"{self.server.base_url}/subscriptions/{request.group('sub')}/"
                    f"operationresults/{op}?api-version={request.query['api-version']}")
        return 202, None, {"Location": location, "Retry-After": "0"}

    def _rg_delete_status(self, request: Request) -> Answer:
        key = self._deletes.pop(request.group("op"), None)
        if key is not None:
            sub, rg = key
            self.resource_groups.pop(key, None)
            for store in (self.identities, self.registries):
                for k in [k for k in store if k[:2] == key]:
                    store.pop(k)
            self.extra_resources.pop(key, None)
            prefix = f"/subscriptions/{sub}/resourcegroups/{rg}/"
            for k in [k for k in self.role_assignments if k.startswith(prefix)]:
                self.role_assignments.pop(k)
        return 200, None, {}

    def _rg_resources(self, request: Request) -> Answer:
        key = self._rg_key(request)
        if key not in self.resource_groups:
            raise ArmError(404, "ResourceGroupNotFound",
                           f"Resource group '{request.group('rg')}' could not be found.")
        value = [_summary(r) for store in (self.identities, self.registries)
                 for k, r in store.items() if k[:2] == key]
        value += list(self.extra_resources.get(key, []))
        return 200, {"value": value}, {}

    # ------------------------------------------------------------------ identities

    def _in_rg(self, request: Request) -> tuple[str, str, str]:
        key = self._rg_key(request)
        if key not in self.resource_groups:
            raise ArmError(404, "ResourceGroupNotFound",
                           f"Resource group '{request.group('rg')}' could not be found.")
        return (*key, request.group("name").lower())

    def _msi_put(self, request: Request) -> Answer:
        key = self._in_rg(request)
        body = request.body or {}
        existing = self.identities.get(key)
        if existing is not None:
            existing["tags"] = body.get("tags") or {}
            return 200, existing, {}
        sub, rg, name = request.group("sub"), request.group("rg"), request.group("name")
        made = {"id": f"/subscriptions/{sub}/resourcegroups/{rg}/providers/Microsoft."
                      f"ManagedIdentity/userAssignedIdentities/{name}",
                "name": name, "type": "Microsoft.ManagedIdentity/userAssignedIdentities",
                "location": body.get("location") or "eastus", "tags": body.get("tags") or {},
                "properties": {"tenantId": str(uuid.uuid4()),
                               "principalId": str(uuid.uuid4()),
                               "clientId": str(uuid.uuid4())}}
        self.identities[key] = made
        return 201, made, {}

    def _msi_get(self, request: Request) -> Answer:
        found = self.identities.get(self._in_rg(request))
        if found is None:
            raise ArmError(404, "ResourceNotFound", "The Resource 'Microsoft.ManagedIdentity/"
                           f"userAssignedIdentities/{request.group('name')}' under resource "
                           f"group '{request.group('rg')}' was not found.")
        return 200, found, {}

    def _msi_delete(self, request: Request) -> Answer:
        found = self.identities.pop(self._in_rg(request), None)
        return (200 if found else 204), None, {}

    # ------------------------------------------------------------------ registries

    def _acr_put(self, request: Request) -> Answer:
        key = self._in_rg(request)
        body = request.body or {}
        name = request.group("name")
        existing = self.registries.get(key)
        if existing is not None:
            existing["tags"] = body.get("tags") or {}
            return 200, existing, {}
        if name.lower() in self.taken_registry_names or any(
                k[2] == name.lower() for k in self.registries):
            raise ArmError(409, "AlreadyInUse", f"The registry {name} is already in use.")
        sub, rg = request.group("sub"), request.group("rg")
        made = {"id": f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft."
                      f"ContainerRegistry/registries/{name}",
                "name": name, "type": "Microsoft.ContainerRegistry/registries",
                "location": body.get("location") or "eastus", "tags": body.get("tags") or {},
                "sku": body.get("sku") or {"name": "Basic", "tier": "Basic"},
                "properties": {"loginServer": f"{name.lower()}.azurecr.io",
                               "provisioningState": "Creating",
                               "adminUserEnabled": False}}
        self.registries[key] = made

        def status() -> tuple[str, Any]:
            made["properties"]["provisioningState"] = "Succeeded"
            return "Succeeded", None
        url = self.server.operation(sub, "Microsoft.ContainerRegistry", made["location"],
                                    status)
        return 201, made, {"Azure-AsyncOperation": url}

    def _acr_get(self, request: Request) -> Answer:
        found = self.registries.get(self._in_rg(request))
        if found is None:
            raise ArmError(404, "ResourceNotFound", "The Resource 'Microsoft.ContainerRegistry/"
                           f"registries/{request.group('name')}' under resource group "
                           f"'{request.group('rg')}' was not found.")
        return 200, found, {}

    def _acr_delete(self, request: Request) -> Answer:
        found = self.registries.pop(self._in_rg(request), None)
        return (200 if found else 204), None, {}

    # ------------------------------------------------------------------ role assignments

    def _role_put(self, request: Request) -> Answer:
        scope, name = request.group("scope"), request.group("name")
        props = (request.body or {}).get("properties") or {}
        principal = props.get("principalId")
        known = {i["properties"]["principalId"] for i in self.identities.values()}
        known |= {p.object_id for p in self.server.principals.values()}
        if principal not in known:
            raise ArmError(400, "PrincipalNotFound", f"Principal {principal} does not exist in "
                           "the directory.")
        rid = f"{scope}/providers/Microsoft.Authorization/roleAssignments/{name}"
        for key, other in self.role_assignments.items():
            p = other["properties"]
            if key != rid.lower() and p["scope"].lower() == scope.lower() and \
                    p["principalId"] == principal and \
                    p["roleDefinitionId"].lower() == str(props.get("roleDefinitionId")).lower():
                raise ArmError(409, "RoleAssignmentExists", "The role assignment already "
                               "exists.")
        made = {"id": rid, "name": name, "type": "Microsoft.Authorization/roleAssignments",
                "properties": {"scope": scope, "principalId": principal,
                               "principalType": props.get("principalType") or "User",
                               "roleDefinitionId": props.get("roleDefinitionId")}}
        existed = rid.lower() in self.role_assignments
        self.role_assignments[rid.lower()] = made
        return (200 if existed else 201), made, {}

    def _role_get(self, request: Request) -> Answer:
        rid = (f"{request.group('scope')}/providers/Microsoft.Authorization/roleAssignments/"
               f"{request.group('name')}").lower()
        found = self.role_assignments.get(rid)
        if found is None:
            raise ArmError(404, "RoleAssignmentNotFound", "The role assignment "
                           f"'{request.group('name')}' is not found.")
        return 200, found, {}

    def _role_delete(self, request: Request) -> Answer:
        rid = (f"{request.group('scope')}/providers/Microsoft.Authorization/roleAssignments/"
               f"{request.group('name')}").lower()
        found = self.role_assignments.pop(rid, None)
        return (200, found, {}) if found else (204, None, {})


def _summary(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: copy.deepcopy(resource[k]) for k in ("id", "name", "type", "location", "tags")}
