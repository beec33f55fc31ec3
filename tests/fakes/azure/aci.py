"""Microsoft.ContainerInstance in the fake ARM: container groups and their lifecycle.

A PUT makes a group in provisioningState ``Pending`` (its container ``Waiting``) and
answers 201 with an ``Azure-AsyncOperation`` URL whose polls follow the group. Nothing
moves by itself: tests (or a harness) move groups on with ``start``, ``finish``,
``fail_provisioning``, ``fail_image_pull``, ``write_logs``, as real ACI would. A
PUT onto an existing group answers 200 and leaves it as it is (no restart). Lists,
like real ARM's, carry no ``instanceView``. ``stop`` terminates the containers (exit
code 137) and marks the group ``Stopped``; DELETE answers 202 and the group is gone
after ``delete_polls`` polls of its operation.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
import time
from typing import Any

from tests.fakes.azure.server import Answer, ArmError, ArmServer, Request

NS = "Microsoft.ContainerInstance"
CG = (r"/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/"
      r"Microsoft\.ContainerInstance/containerGroups/(?P<name>[^/]+)")
NAME = re.compile(r"^[a-z0-9]([a-z0-9]|-(?!-)){0,61}[a-z0-9]$|^[a-z0-9]$")


class FakeContainerInstance:
    def __init__(self, server: ArmServer, resource_groups: dict[tuple[str, str], Any]):
        self.server = server
        self.resource_groups = resource_groups  # shared with the resources fake
        self.groups: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.logs: dict[tuple[str, str, str, str], list[tuple[str, str]]] = {}
        self.delete_polls = 1
        self.page_size = 100
        self.inaccessible_images: set[str] = set()
        self.group_quota: int | None = None  # groups per subscription and region
        # Benchmarks: groups start on their own this many seconds after the PUT (None:
        # only when a test says so).
        self.auto_start: float | None = None
        self._made: dict[tuple[str, str, str], float] = {}
        self._clock = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        # Deletions run on in Azure whether or not anyone polls their operation: a
        # group being deleted is gone by the next read of it.
        self._deleting: set[tuple[str, str, str]] = set()
        s = server
        s.route("PUT", CG, "containerGroups.create", NS, self._put, "containerGroups")
        s.route("GET", CG, "containerGroups.get", NS, self._get, "containerGroups")
        s.route("DELETE", CG, "containerGroups.delete", NS, self._delete, "containerGroups")
        s.route("POST", CG + "/stop", "containerGroups.stop", NS, self._stop, "containerGroups")
        s.route("GET", r"/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/"
                r"Microsoft\.ContainerInstance/containerGroups", "containerGroups.list", NS,
                self._list, "containerGroups")
        s.route("GET", CG + r"/containers/(?P<c>[^/]+)/logs", "containers.logs", NS,
                self._logs, "containerGroups/containers")

    def reset(self) -> None:
        with self.server.lock:
            self.groups.clear()
            self.logs.clear()
            self._deleting.clear()
            self.delete_polls = 1
            self.page_size = 100
            self.inaccessible_images.clear()
            self.group_quota = None
            self.auto_start = None
            self._made.clear()

    # ------------------------------------------------------------------ test controls

    def key(self, rg: str, name: str, sub: str | None = None) -> tuple[str, str, str]:
        if sub is None:
            found = [k for k in self.groups if k[1] == rg.lower() and k[2] == name]
            if found:
                return found[0]
            raise KeyError(f"no container group {rg}/{name}")
        return sub.lower(), rg.lower(), name

    def group(self, rg: str, name: str) -> dict[str, Any]:
        with self.server.lock:
            return copy.deepcopy(self.groups[self.key(rg, name)])

    def names(self, rg: str | None = None) -> list[str]:
        with self.server.lock:
            return sorted(k[2] for k in self.groups if rg is None or k[1] == rg.lower())

    def start(self, rg: str, name: str) -> None:
        """Provisioned: image pulled, containers running."""
        with self.server.lock:
            self._start(self.key(rg, name))

    def _start(self, key: tuple[str, str, str]) -> None:
        # The caller holds the server's lock (a request handler, or start).
        props = self.groups[key]["properties"]
        props["provisioningState"] = "Succeeded"
        props["instanceView"]["state"] = "Running"
        for c in props["containers"]:
            view = c["properties"]["instanceView"]
            view["currentState"] = {"state": "Running", "startTime": self._stamp(),
                                    "detailStatus": ""}
            view["events"] += [self._event("Pulled", "Normal", "Successfully pulled image"),
                               self._event("Started", "Normal", "Started container")]

    def finish(self, rg: str, name: str, exit_code: int = 0) -> None:
        with self.server.lock:
            g = self.groups[self.key(rg, name)]
            props = g["properties"]
            props["provisioningState"] = "Succeeded"
            for c in props["containers"]:
                view = c["properties"]["instanceView"]
                start = view["currentState"].get("startTime") or self._stamp()
                view["previousState"] = view["currentState"]
                view["currentState"] = {
                    "state": "Terminated", "startTime": start, "finishTime": self._stamp(),
                    "exitCode": exit_code,
                    "detailStatus": "Completed" if exit_code == 0 else "Error"}
            props["instanceView"]["state"] = "Succeeded" if exit_code == 0 else "Failed"

    def fail_provisioning(self, rg: str, name: str, code: str, message: str) -> None:
        with self.server.lock:
            g = self.groups[self.key(rg, name)]
            g["properties"]["provisioningState"] = "Failed"
            g["properties"]["instanceView"]["state"] = "Failed"
            g["properties"]["instanceView"]["events"].append(
                self._event(code, "Warning", message))

    def fail_image_pull(self, rg: str, name: str) -> str:
        """The container waits, its events say the pull failed (as ACI shows it)."""
        with self.server.lock:
            g = self.groups[self.key(rg, name)]
            c = g["properties"]["containers"][0]
            image = c["properties"]["image"]
            message = (f'Failed to pull image "{image}": rpc error: code = Unknown desc = '
                       f"failed to resolve reference \"{image}\": not found")
            view = c["properties"]["instanceView"]
            view["currentState"] = {"state": "Waiting", "detailStatus": "ErrImagePull"}
            view["events"].append(self._event("Failed", "Warning", message))
            return message

    def set_state(self, rg: str, name: str, *, provisioning: str | None = None,
                  group: str | None = None, container: dict[str, Any] | None = None) -> None:
        """Any native state at all, for the status mapping tests."""
        with self.server.lock:
            props = self.groups[self.key(rg, name)]["properties"]
            if provisioning is not None:
                props["provisioningState"] = provisioning
            if group is not None:
                props["instanceView"]["state"] = group
            if container is not None:
                props["containers"][0]["properties"]["instanceView"]["currentState"] = container

    def write_logs(self, rg: str, name: str, lines: list[str], *, container: str | None = None,
                   same_time: bool = False) -> None:
        with self.server.lock:
            sub, rg_l, _ = self.key(rg, name)
            g = self.groups[(sub, rg_l, name)]
            cname = container or g["properties"]["containers"][0]["name"]
            store = self.logs.setdefault((sub, rg_l, name, cname), [])
            stamp = self._stamp()
            for line in lines:
                store.append((stamp if same_time else self._stamp(), line))

    def forget(self, rg: str, name: str) -> None:
        with self.server.lock:
            self.groups.pop(self.key(rg, name), None)

    # ------------------------------------------------------------------ handlers

    def _rg(self, request: Request) -> dict[str, Any]:
        rg = self.resource_groups.get((request.group("sub").lower(), request.group("rg").lower()))
        if rg is None:
            raise ArmError(404, "ResourceGroupNotFound",
                           f"Resource group '{request.group('rg')}' could not be found.")
        return rg  # type: ignore[no-any-return]

    def _put(self, request: Request) -> Answer:
        self._rg(request)
        sub, rg, name = request.group("sub"), request.group("rg"), request.group("name")
        key = (sub.lower(), rg.lower(), name)
        body = request.body or {}
        if not NAME.match(name):
            raise ArmError(400, "InvalidContainerGroupName", f"The container group name "
                           f"'{name}' is invalid. The container group name must contain no "
                           "more than 63 characters and must match the regex "
                           "'[a-z0-9]([-a-z0-9]*[a-z0-9])?' (e.g. 'my-name').")
        if not body.get("location"):
            raise ArmError(400, "LocationRequired", "The location property is required for "
                           "this definition.")
        props = copy.deepcopy(body.get("properties") or {})
        self._validate(name, props)
        if key in self.groups:
            existing = self.groups[key]
            existing["tags"] = body.get("tags") or {}
            return 200, self._view(existing), {
                "Azure-AsyncOperation": self._op(sub, existing)}
        location = str(body["location"]).replace(" ", "").lower()
        if self.group_quota is not None:
            used = sum(1 for k, g in self.groups.items()
                       if k[0] == key[0] and g["location"] == location)
            if used >= self.group_quota:
                raise ArmError(409, "ContainerGroupQuotaReached", "Resource type 'Microsoft."
                               "ContainerInstance/containerGroups' container group quota "
                               f"'ContainerGroups' exceeded in region '{location}'. Limit: "
                               f"'{self.group_quota}', Usage: '{used}' Requested: '1'.")
        for c in props["containers"]:
            c["properties"]["instanceView"] = {
                "restartCount": 0,
                "currentState": {"state": "Waiting", "detailStatus": "Pulling"},
                "events": [self._event("Pulling", "Normal",
                                       f"pulling image \"{c['properties']['image']}\"")]}
        props["provisioningState"] = "Pending"
        props["instanceView"] = {"events": [], "state": "Pending"}
        group = {"id": f"/subscriptions/{sub}/resourceGroups/{rg}/providers/{NS}/"
                       f"containerGroups/{name}",
                 "name": name, "type": f"{NS}/containerGroups", "location": location,
                 "tags": body.get("tags") or {}, "properties": props}
        if body.get("identity"):
            group["identity"] = body["identity"]
        self.groups[key] = group
        answer = 201, self._view(group), {"Azure-AsyncOperation": self._op(sub, group)}
        if self.auto_start == 0:
            # Started by the next read anyway: at once, so that a read after a burst of
            # creates does not start them all while every other request waits.
            self._start(key)
        else:
            self._made[key] = time.monotonic()
        return answer

    def _validate(self, name: str, props: dict[str, Any]) -> None:
        containers = props.get("containers") or []
        if not containers:
            raise ArmError(400, "InvalidContainerGroupDefinition", "The container group "
                           f"'{name}' must have at least one container.")
        if props.get("osType") not in ("Linux", "Windows"):
            raise ArmError(400, "InvalidOsType", f"The os type '{props.get('osType')}' is "
                           "invalid. The supported values are 'Linux', 'Windows'.")
        if props.get("restartPolicy", "Always") not in ("Always", "OnFailure", "Never"):
            raise ArmError(400, "InvalidRestartPolicy", "The restart policy is invalid.")
        for c in containers:
            cp = c.get("properties") or {}
            image = str(cp.get("image") or "")
            if not image:
                raise ArmError(400, "InvalidImageName", "The image name is empty.")
            if image in self.inaccessible_images:
                raise ArmError(400, "InaccessibleImage", f"The image '{image}' in container "
                               f"group '{name}' is not accessible. Please check the image and "
                               "registry credential.")
            requests = ((cp.get("resources") or {}).get("requests") or {})
            if not requests.get("cpu") or not requests.get("memoryInGB"):
                raise ArmError(400, "InvalidResourceRequests", "The container "
                               f"'{c.get('name')}' must request cpu and memoryInGB.")
            memory = float(requests["memoryInGB"])
            if round(memory * 10) != memory * 10:
                raise ArmError(400, "InvalidMemoryRequest", "The memory requirement should be "
                               "in the multiple of 0.1.")

    def _op(self, sub: str, group: dict[str, Any]) -> str:
        def status() -> tuple[str, Any]:
            state = group["properties"]["provisioningState"]
            if state == "Succeeded":
                return "Succeeded", None
            if state == "Failed":
                events = group["properties"]["instanceView"]["events"]
                last = events[-1] if events else {"name": "Failed", "message": "failed"}
                return "Failed", {"code": last["name"], "message": last["message"]}
            return "InProgress", None
        return self.server.operation(sub, NS, group["location"], status)

    def _settle_deletes(self) -> None:
        for key in self._deleting:
            self.groups.pop(key, None)
        self._deleting.clear()
        if self.auto_start is not None:
            due = time.monotonic() - self.auto_start
            for key, made in list(self._made.items()):
                if made <= due:
                    del self._made[key]
                    if key in self.groups:  # by its key: a search by name is O(groups)
                        self._start(key)

    def _found(self, request: Request) -> tuple[tuple[str, str, str], dict[str, Any]]:
        self._rg(request)
        self._settle_deletes()
        key = (request.group("sub").lower(), request.group("rg").lower(), request.group("name"))
        group = self.groups.get(key)
        if group is None:
            raise ArmError(404, "ResourceNotFound", "The Resource 'Microsoft.ContainerInstance/"
                           f"containerGroups/{request.group('name')}' under resource group "
                           f"'{request.group('rg')}' was not found. For more details please "
                           "go to https://aka.ms/ARMResourceNotFoundFix")
        return key, group

    def _get(self, request: Request) -> Answer:
        _, group = self._found(request)
        return 200, self._view(group), {}

    def _list(self, request: Request) -> Answer:
        self._rg(request)
        self._settle_deletes()
        sub, rg = request.group("sub").lower(), request.group("rg").lower()
        names = sorted(k[2] for k in self.groups if k[0] == sub and k[1] == rg)
        after = request.query.get("$skiptoken", "")
        page = [n for n in names if n > after][: self.page_size]
        value = [self._view(self.groups[(sub, rg, n)], listed=True) for n in page]
        body: dict[str, Any] = {"value": value}
        if page and page[-1] != names[-1]:
            body["nextLink"] = (f"{self.server.base_url}{request.path}?api-version="
                                f"{request.query['api-version']}&$skiptoken={page[-1]}")
        return 200, body, {}

    def _stop(self, request: Request) -> Answer:
        _, group = self._found(request)
        props = group["properties"]
        if props["provisioningState"] in ("Pending", "Creating"):
            raise ArmError(409, "ContainerGroupTransitioning", f"The container group "
                           f"'{group['name']}' is still transitioning, please retry later.")
        props["instanceView"]["state"] = "Stopped"
        for c in props["containers"]:
            view = c["properties"]["instanceView"]
            if view["currentState"].get("state") != "Terminated":
                view["currentState"] = {"state": "Terminated", "exitCode": 137,
                                        "detailStatus": "Killed",
                                        "startTime": view["currentState"].get("startTime"),
                                        "finishTime": self._stamp()}
        return 204, None, {}

    def _delete(self, request: Request) -> Answer:
        key = (request.group("sub").lower(), request.group("rg").lower(), request.group("name"))
        self._rg(request)
        group = self.groups.get(key)
        if group is None:
            return 204, None, {}
        group["properties"]["provisioningState"] = "Deleting"
        self._deleting.add(key)
        left = [self.delete_polls]

        def status() -> tuple[str, Any]:
            left[0] -= 1
            if left[0] > 0:
                return "InProgress", None
            self.groups.pop(key, None)
            self._deleting.discard(key)
            return "Succeeded", None
        if self.delete_polls <= 0:
            self.groups.pop(key, None)
            self._deleting.discard(key)
            return 200, self._view(group), {}
        return 202, None, {"Azure-AsyncOperation": self.server.operation(
            request.group("sub"), NS, group["location"], status)}

    def _logs(self, request: Request) -> Answer:
        key, group = self._found(request)
        cname = request.group("c")
        if cname not in [c["name"] for c in group["properties"]["containers"]]:
            raise ArmError(404, "ContainerNotFound", f"The container '{cname}' could not be "
                           f"found in container group '{group['name']}'.")
        entries = self.logs.get((*key, cname), [])
        with_stamps = request.query.get("timestamps", "").lower() == "true"
        lines = [f"{stamp} {text}" if with_stamps else text for stamp, text in entries]
        tail = int(request.query.get("tail") or 0)
        if tail:
            lines = lines[-tail:]
        return 200, {"content": "".join(line + "\n" for line in lines)}, {}

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _view(group: dict[str, Any], *, listed: bool = False) -> dict[str, Any]:
        shown = copy.deepcopy(group)
        props = shown["properties"]
        for c in props.get("containers") or []:
            for env in c["properties"].get("environmentVariables") or []:
                env.pop("secureValue", None)  # ARM never returns secure values
            if listed:
                c["properties"].pop("instanceView", None)
        for cred in props.get("imageRegistryCredentials") or []:
            cred.pop("password", None)
        if listed:
            props.pop("instanceView", None)
        return shown

    def _stamp(self) -> str:
        self._clock += dt.timedelta(microseconds=1500)
        return self._clock.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"

    def _event(self, name: str, kind: str, message: str) -> dict[str, Any]:
        stamp = self._stamp()
        return {"count": 1, "firstTimestamp": stamp, "lastTimestamp": stamp, "name": name,
                "message": message, "type": kind}
