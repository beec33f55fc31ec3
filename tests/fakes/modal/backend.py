"""The stateful part of the fake Modal server: apps, images, secrets and sandboxes.

``FakeModal`` answers the RPCs the modal client makes for ``App.lookup``,
``Image.from_registry`` / ``Image.debian_slim().pip_install``, ``Secret.from_name``,
``Sandbox.create`` (the V2 calls, and the V1 calls a ``gpu=`` sandbox takes),
``Sandbox.from_name`` / ``from_id`` / ``list`` / ``poll`` / ``terminate``, ``Dict``
``from_name`` / ``get`` / ``put`` / ``pop``, and the
sandbox's stdout and stderr (live, from a byte offset, over the task command router
for V2 and ``SandboxGetLogs`` for V1). Everything else is refused (see ``server``).

Tests move sandboxes on by command, from their own thread: ``write`` output, ``finish``
with an exit code, ``set_result`` for any native state (timeout, init failure, OOM...),
``fail_to_start``. ``deprecate_client`` makes every call answer as Modal does for a
client version it no longer supports. Handlers that wait (a long poll, a live stdio
read) check the state every few milliseconds, bounded, so a forgotten ``finish`` cannot
hang a test.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from grpclib import GRPCError, Status
from modal_proto import api_pb2
from modal_proto import task_command_router_pb2 as tcr_pb2

from tests.fakes.modal.server import ROUTER, GrpcFake, fake_jwt

GS = api_pb2.GenericResult
LONG_POLL_CAP = 0.3  # seconds a SandboxWait long poll is held here (Modal holds ~55 s)
STREAM_CAP = 15.0  # seconds a live stdio read is held open at most
TICK = 0.01
FD_OUT, FD_ERR = api_pb2.FILE_DESCRIPTOR_STDOUT, api_pb2.FILE_DESCRIPTOR_STDERR

# What Modal answers a client it no longer supports (FAILED_PRECONDITION on every call;
# modal 1.6.4 raises it as ConflictError).
DEPRECATED_MESSAGE = ("Modal client version {version} is deprecated and no longer supported. "
                      "Please upgrade to modal>={minimum} with `pip install --upgrade modal`.")


@dataclass
class FakeSandbox:
    sandbox_id: str
    app_id: str
    name: str
    tags: dict[str, str]
    definition: Any  # api_pb2.Sandbox
    env: dict[str, str]
    secret_ids: list[str]
    task_id: str
    v1: bool
    created_at: float
    result: Any = None  # api_pb2.GenericResult once finished
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    # V1 SandboxGetLogs entries: (entry_id, fd, text), in order.
    entries: list[tuple[str, int, str]] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.result is None


class FakeModal(GrpcFake):
    """The fake Modal control plane. ``start()`` returns the URL for ``server_url``."""

    def __init__(self, *, list_page_size: int = 100) -> None:
        super().__init__()
        self._ids = itertools.count(1)
        self._state = threading.Lock()
        self.list_page_size = list_page_size
        self.environments: dict[str, str] = {"main": "en-main"}
        self.apps: dict[tuple[str, str], str] = {}  # (environment, name) -> app id
        self.app_names: dict[str, tuple[str, str]] = {}
        self.images: dict[str, list[str]] = {}  # image id -> dockerfile commands
        self.broken_images: dict[str, str] = {}  # text in a dockerfile command -> build error
        self.secrets: dict[tuple[str, str], str] = {}  # (environment, name) -> secret id
        self.secret_env: dict[str, dict[str, str]] = {}  # anonymous secret id -> its env
        self.sandboxes: dict[str, FakeSandbox] = {}
        self.tokens: dict[str, str] | None = None  # token id -> secret; None: accept any
        self.dict_names: dict[tuple[str, str], str] = {}  # (environment, name) -> dict id
        self.dicts: dict[str, dict[bytes, bytes]] = {}  # dict id -> serialized entries
        self.long_polls = 0  # SandboxWait calls with a timeout (each holds a stream)
        self.held_polls = 0
        self.peak_held_polls = 0
        for name in dir(self):
            if name.startswith("rpc_"):
                self.handlers[name[4:]] = getattr(self, name)
            elif name.startswith("router_"):
                self.handlers[ROUTER + name[7:]] = getattr(self, name)

    # ------------------------------------------------------------------ test controls

    def reset(self) -> None:
        """Forget every app, sandbox, secret, fault and recorded call (ids keep counting)."""
        with self._state:
            self.calls.clear()
            self.unimplemented.clear()
            self.errors.clear()
            self.faults.clear()
            self.gate = None
            self.tokens = None
            self.broken_images.clear()
            self.apps.clear()
            self.app_names.clear()
            self.images.clear()
            self.secrets.clear()
            self.secret_env.clear()
            self.sandboxes.clear()
            self.dict_names.clear()
            self.dicts.clear()
            self.long_polls = self.held_polls = self.peak_held_polls = 0
            self.environments = {"main": "en-main"}

    def add_secret(self, name: str, environment: str = "main") -> str:
        with self._state:
            sid = f"st-{next(self._ids)}"
            self.secrets[(environment, name)] = sid
            return sid

    def delete_secret(self, name: str, environment: str = "main") -> None:
        """As ``modal secret delete``: its id is refused from now on."""
        with self._state:
            del self.secrets[(environment, name)]

    def break_image(self, marker: str, error: str) -> None:
        """Fail the build of any image whose Dockerfile mentions ``marker``."""
        self.broken_images[marker] = error

    def require_tokens(self, tokens: dict[str, str]) -> None:
        """Refuse calls whose token id/secret are not in ``tokens`` (UNAUTHENTICATED)."""
        self.tokens = dict(tokens)

    def deprecate_client(self, minimum: str = "99.0") -> None:
        """Answer every call as Modal does once the client's version is unsupported."""

        def gate(name: str, metadata: dict[str, str]) -> GRPCError | None:
            version = metadata.get("x-modal-client-version", "unknown")
            return GRPCError(Status.FAILED_PRECONDITION,
                             DEPRECATED_MESSAGE.format(version=version, minimum=minimum))

        self.gate = gate

    def sandbox(self, sandbox_id: str) -> FakeSandbox:
        with self._state:
            return self.sandboxes[sandbox_id]

    def sandboxes_tagged(self, **tags: str) -> list[FakeSandbox]:
        with self._state:
            return [sb for sb in self.sandboxes.values()
                    if all(sb.tags.get(k) == v for k, v in tags.items())]

    def write(self, sandbox_id: str, stdout: str = "", stderr: str = "") -> None:
        with self._state:
            sb = self.sandboxes[sandbox_id]
            for fd, text, buffer in ((FD_OUT, stdout, sb.stdout), (FD_ERR, stderr, sb.stderr)):
                if text:
                    buffer.extend(text.encode())
                    sb.entries.append((f"{len(sb.entries) + 1}-0", fd, text))

    def set_result(self, sandbox_id: str, status: int, exit_code: int = 0,
                   exception: str = "") -> None:
        """End a sandbox with any GenericResult status (a native state)."""
        with self._state:
            sb = self.sandboxes[sandbox_id]
            if sb.result is None:
                sb.result = GS(status=status, exitcode=exit_code,  # type: ignore[arg-type]
                               exception=exception)

    def finish(self, sandbox_id: str, exit_code: int = 0, stdout: str = "",
               stderr: str = "") -> None:
        self.write(sandbox_id, stdout, stderr)
        status = GS.GENERIC_STATUS_SUCCESS if exit_code == 0 else GS.GENERIC_STATUS_FAILURE
        self.set_result(sandbox_id, status, exit_code)

    def fail_to_start(self, sandbox_id: str, message: str) -> None:
        self.set_result(sandbox_id, GS.GENERIC_STATUS_INIT_FAILURE, 0, message)

    # ------------------------------------------------------------------ helpers

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids)}"

    def _auth(self, md: dict[str, str]) -> None:
        if self.tokens is None:
            return
        token_id = md.get("x-modal-token-id", "")
        if self.tokens.get(token_id) != md.get("x-modal-token-secret"):
            raise GRPCError(Status.UNAUTHENTICATED,
                            "Token ID or secret is invalid. Run `modal token new` to create one.")

    def _env(self, name: str) -> str:
        return name or "main"

    def _get(self, sandbox_id: str) -> FakeSandbox:
        with self._state:
            sb = self.sandboxes.get(sandbox_id)
        if sb is None:
            raise GRPCError(Status.NOT_FOUND, f"Sandbox {sandbox_id} not found")
        return sb

    @staticmethod
    def _metadata(sb: FakeSandbox) -> Any:
        return api_pb2.SandboxHandleMetadata(app_id=sb.app_id, result=sb.result)

    # ------------------------------------------------------------------ auth, env, app

    def rpc_AuthTokenGet(self, req: Any, md: dict[str, str]) -> Any:
        self._auth(md)
        return api_pb2.AuthTokenGetResponse(token=fake_jwt())

    def rpc_ClientHello(self, req: Any, md: dict[str, str]) -> Any:
        self._auth(md)
        return api_pb2.ClientHelloResponse()

    def rpc_EnvironmentGetOrCreate(self, req: Any, md: dict[str, str]) -> Any:
        self._auth(md)
        name = self._env(req.deployment_name)
        if name not in self.environments:
            raise GRPCError(Status.NOT_FOUND, f"Environment '{name}' not found")
        return api_pb2.EnvironmentGetOrCreateResponse(
            environment_id=self.environments[name],
            metadata=api_pb2.EnvironmentMetadata(
                name=name, settings=api_pb2.EnvironmentSettings(image_builder_version="2024.10")))

    def rpc_AppGetOrCreate(self, req: Any, md: dict[str, str]) -> Any:
        self._auth(md)
        env = self._env(req.environment_name)
        if env not in self.environments:
            raise GRPCError(Status.NOT_FOUND, f"Environment '{env}' not found")
        with self._state:
            app_id = self.apps.get((env, req.app_name))
            if app_id is None:
                if req.object_creation_type != api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING:
                    raise GRPCError(Status.NOT_FOUND,
                                    f"App '{req.app_name}' not found in environment '{env}'")
                app_id = self._new_id("ap")
                self.apps[(env, req.app_name)] = app_id
                self.app_names[app_id] = (env, req.app_name)
        return api_pb2.AppGetOrCreateResponse(app_id=app_id)

    # ------------------------------------------------------------------ images, secrets

    def rpc_ImageGetOrCreate(self, req: Any, md: dict[str, str]) -> Any:
        self._auth(md)
        commands = list(req.image.dockerfile_commands)
        image_id = self._new_id("im")
        self.images[image_id] = commands
        for marker, error in self.broken_images.items():
            if any(marker in c for c in commands):
                return api_pb2.ImageGetOrCreateResponse(
                    image_id=image_id,
                    result=GS(status=GS.GENERIC_STATUS_FAILURE, exception=error))
        return api_pb2.ImageGetOrCreateResponse(
            image_id=image_id, result=GS(status=GS.GENERIC_STATUS_SUCCESS))

    def rpc_SecretGetOrCreate(self, req: Any, md: dict[str, str]) -> Any:
        self._auth(md)
        env = self._env(req.environment_name)
        with self._state:
            if req.object_creation_type in (api_pb2.OBJECT_CREATION_TYPE_EPHEMERAL,
                                            api_pb2.OBJECT_CREATION_TYPE_ANONYMOUS_OWNED_BY_APP):
                # Secret.from_dict: how a V1 sandbox's env travels.
                sid = self._new_id("st")
                self.secret_env[sid] = dict(req.env_dict)
                return api_pb2.SecretGetOrCreateResponse(secret_id=sid)
            found = self.secrets.get((env, req.deployment_name))
        if found is None:
            raise GRPCError(Status.NOT_FOUND,
                            f"Secret '{req.deployment_name}' not found in environment '{env}'")
        return api_pb2.SecretGetOrCreateResponse(secret_id=found)

    # ------------------------------------------------------------------ sandboxes

    def _create(self, app_id: str, definition: Any, tags: Any, env: dict[str, str],
                secret_ids: list[str], v1: bool) -> FakeSandbox:
        if app_id not in self.app_names:
            raise GRPCError(Status.NOT_FOUND, f"App {app_id} not found")
        if definition.image_id not in self.images:
            raise GRPCError(Status.INVALID_ARGUMENT, f"Image {definition.image_id} not found")
        known = set(self.secrets.values()) | set(self.secret_env)
        for secret_id in secret_ids:
            if secret_id not in known:
                raise GRPCError(Status.NOT_FOUND, f"Secret {secret_id} not found")
        with self._state:
            name = definition.name
            if name and any(sb.name == name and sb.app_id == app_id and sb.running
                            for sb in self.sandboxes.values()):
                raise GRPCError(Status.ALREADY_EXISTS,
                                f"Sandbox with name '{name}' already exists in app")
            number = next(self._ids)
            # The id's shape picks the client's implementation: 'sb-' + 22 alphanumerics is V1.
            sandbox_id = f"sb-{number:022d}" if v1 else f"sb-v2-{number}"
            sb = FakeSandbox(sandbox_id, app_id, name,
                             {t.tag_name: t.tag_value for t in tags}, definition, env,
                             secret_ids, f"ta-{number}", v1, time.time())
            self.sandboxes[sandbox_id] = sb
            return sb

    def rpc_SandboxCreateV2(self, req: Any, md: dict[str, str]) -> Any:
        env: dict[str, str] = {}
        secret_ids: list[str] = []
        for source in req.secret_sources:
            if source.secret_id:
                secret_ids.append(source.secret_id)
            env.update(dict(source.env.contents))
        sb = self._create(req.app_id, req.definition, req.tags, env, secret_ids, v1=False)
        return api_pb2.SandboxCreateV2Response(
            sandbox_id=sb.sandbox_id, task_id=sb.task_id,
            command_router_access=api_pb2.CommandRouterAccess(url=self.url, jwt=fake_jwt()))

    def rpc_SandboxCreate(self, req: Any, md: dict[str, str]) -> Any:
        ids = list(req.definition.secret_ids)
        env = {k: v for sid in ids for k, v in self.secret_env.get(sid, {}).items()}
        sb = self._create(req.app_id, req.definition, req.tags, env,
                          [sid for sid in ids if sid not in self.secret_env], v1=True)
        return api_pb2.SandboxCreateResponse(sandbox_id=sb.sandbox_id)

    def _task_id(self, req: Any, md: dict[str, str]) -> Any:
        sb = self._get(req.sandbox_id)
        return api_pb2.SandboxGetTaskIdResponse(task_id=sb.task_id, task_result=sb.result)

    rpc_SandboxGetTaskId = _task_id
    rpc_SandboxGetTaskIdV2 = _task_id

    def rpc_SandboxGetCommandRouterAccess(self, req: Any, md: dict[str, str]) -> Any:
        return api_pb2.SandboxGetCommandRouterAccessResponse(url=self.url, jwt=fake_jwt())

    async def _wait(self, req: Any, md: dict[str, str]) -> Any:
        """A zero-timeout poll answers at once; a long poll holds its stream open until
        the sandbox ends or the timeout passes (``long_polls`` and ``peak_held_polls``
        record what a watcher pass cost the server)."""
        sb = self._get(req.sandbox_id)
        deadline = time.monotonic() + min(req.timeout, LONG_POLL_CAP)
        if req.timeout > 0:
            self.long_polls += 1
        held = False
        # Polling, not an Event: test controls change state from another thread.
        while sb.result is None and time.monotonic() < deadline:
            if not held:
                held = True
                self.held_polls += 1
                self.peak_held_polls = max(self.peak_held_polls, self.held_polls)
            await asyncio.sleep(TICK)
        if held:
            self.held_polls -= 1
        return api_pb2.SandboxWaitResponse(result=sb.result, metadata=self._metadata(sb))

    rpc_SandboxWait = _wait
    rpc_SandboxWaitV2 = _wait

    def _terminate(self, req: Any, md: dict[str, str]) -> Any:
        sb = self._get(req.sandbox_id)
        with self._state:
            existing = sb.result
            if sb.result is None:
                sb.result = GS(status=GS.GENERIC_STATUS_TERMINATED)
        return api_pb2.SandboxTerminateResponse(existing_result=existing)

    rpc_SandboxTerminate = _terminate
    rpc_SandboxTerminateV2 = _terminate

    def _from_name(self, req: Any, running_only: bool, v1: bool) -> Any:
        """A name lookup sees its own kind only: the client falls back from the V2 lookup
        to the V1 one after a not-found, and the V1 one takes no include_terminated."""
        env = self._env(req.environment_name)
        app_id = self.apps.get((env, req.app_name))
        with self._state:
            found = [sb for sb in self.sandboxes.values()
                     if sb.app_id == app_id and sb.name == req.sandbox_name and sb.v1 == v1]
        live = [sb for sb in found if sb.running]
        pick = live[-1] if live else None
        if pick is None and req.include_terminated and not running_only and found:
            pick = max(found, key=lambda sb: sb.created_at)
        if pick is None:
            raise GRPCError(Status.NOT_FOUND,
                            f"Sandbox with name '{req.sandbox_name}' not found in app "
                            f"'{req.app_name}'")
        return api_pb2.SandboxGetFromNameResponse(sandbox_id=pick.sandbox_id,
                                                  metadata=self._metadata(pick))

    def rpc_SandboxGetFromNameV2(self, req: Any, md: dict[str, str]) -> Any:
        return self._from_name(req, running_only=False, v1=False)

    def rpc_SandboxGetFromName(self, req: Any, md: dict[str, str]) -> Any:
        return self._from_name(req, running_only=True, v1=True)  # running sandboxes only

    # ------------------------------------------------------------------ dicts

    def rpc_DictGetOrCreate(self, req: Any, md: dict[str, str]) -> Any:
        env = self._env(req.environment_name)
        with self._state:
            dict_id = self.dict_names.get((env, req.deployment_name))
            if dict_id is None:
                if req.object_creation_type != api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING:
                    raise GRPCError(Status.NOT_FOUND,
                                    f"Dict '{req.deployment_name}' not found")
                dict_id = self.dict_names[(env, req.deployment_name)] = self._new_id("di")
                self.dicts[dict_id] = {}
        return api_pb2.DictGetOrCreateResponse(
            dict_id=dict_id, metadata=api_pb2.DictMetadata(name=req.deployment_name))

    def _dict(self, dict_id: str) -> dict[bytes, bytes]:
        found = self.dicts.get(dict_id)
        if found is None:
            raise GRPCError(Status.NOT_FOUND, f"Dict {dict_id} not found")
        return found

    def rpc_DictUpdate(self, req: Any, md: dict[str, str]) -> Any:
        entries = self._dict(req.dict_id)
        created = False
        with self._state:
            for update in req.updates:
                if req.if_not_exists and update.key in entries:
                    continue
                created = created or update.key not in entries
                entries[update.key] = update.value
        return api_pb2.DictUpdateResponse(created=created)

    def rpc_DictGet(self, req: Any, md: dict[str, str]) -> Any:
        value = self._dict(req.dict_id).get(req.key)
        return api_pb2.DictGetResponse(found=value is not None, value=value or b"")

    def rpc_DictPop(self, req: Any, md: dict[str, str]) -> Any:
        with self._state:
            value = self._dict(req.dict_id).pop(req.key, None)
        return api_pb2.DictPopResponse(found=value is not None, value=value or b"")

    def _list(self, req: Any, md: dict[str, str]) -> Any:
        wanted = {t.tag_name: t.tag_value for t in req.tags}
        with self._state:
            rows = [sb for sb in self.sandboxes.values()
                    if (not req.app_id or sb.app_id == req.app_id)
                    and (req.include_finished or sb.running)
                    and all(sb.tags.get(k) == v for k, v in wanted.items())
                    and (not req.before_timestamp or sb.created_at < req.before_timestamp)]
        rows.sort(key=lambda sb: sb.created_at, reverse=True)
        page = rows[: self.list_page_size]
        return api_pb2.SandboxListResponse(sandboxes=[
            api_pb2.SandboxInfo(
                id=sb.sandbox_id, created_at=sb.created_at, app_id=sb.app_id, name=sb.name,
                tags=[api_pb2.SandboxTag(tag_name=k, tag_value=v) for k, v in sb.tags.items()],
                task_info=api_pb2.TaskInfo(id=sb.task_id, result=sb.result),
                metadata=self._metadata(sb))
            for sb in page])

    rpc_SandboxList = _list
    rpc_SandboxListV2 = _list

    # ------------------------------------------------------------------ stdio

    async def router_SandboxStdioReadV2(self, req: Any, md: dict[str, str]) -> AsyncIterator[Any]:
        """Live read from a byte offset: what there is, then more as it comes, until exit."""
        with self._state:
            sb = next((s for s in self.sandboxes.values() if s.task_id == req.task_id), None)
        if sb is None:
            raise GRPCError(Status.NOT_FOUND, f"Task {req.task_id} not found")
        out = req.file_descriptor == tcr_pb2.SANDBOX_STDIO_FILE_DESCRIPTOR_STDOUT
        offset = req.offset
        deadline = time.monotonic() + STREAM_CAP
        while time.monotonic() < deadline:
            data = bytes(sb.stdout if out else sb.stderr)
            done = sb.result is not None
            if offset < len(data):
                yield tcr_pb2.SandboxStdioReadV2Response(data=data[offset:],
                                                         starting_offset=offset)
                offset = len(data)
                continue
            if done:
                return
            await asyncio.sleep(TICK)

    async def rpc_SandboxGetLogs(self, req: Any, md: dict[str, str]) -> AsyncIterator[Any]:
        """V1 stdio: batches after ``last_entry_id``, then ``eof`` once the sandbox ended."""
        sb = self._get(req.sandbox_id)
        seen = req.last_entry_id
        deadline = time.monotonic() + min(req.timeout or STREAM_CAP, STREAM_CAP)
        while time.monotonic() < deadline:
            done = sb.result is not None
            entries = list(sb.entries)
            start = next((i + 1 for i, e in enumerate(entries) if e[0] == seen), 0) if seen else 0
            fresh = [e for e in entries[start:] if e[1] == req.file_descriptor]
            if entries[start:]:
                seen = entries[-1][0]
            for entry_id, fd, text in fresh:
                yield api_pb2.TaskLogsBatch(entry_id=entry_id, items=[
                    api_pb2.TaskLogs(data=text, file_descriptor=fd)])  # type: ignore[arg-type]
            if done:
                yield api_pb2.TaskLogsBatch(eof=True)
                return
            await asyncio.sleep(TICK)
