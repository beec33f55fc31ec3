"""The modal:push adapter: each run is a Modal Sandbox in the pool's app, no worker between.

``PROVIDER`` is what the registry loads for pool type ``modal:push``. Submitting opens
(or reuses) an explicit ``modal.Client`` for the pool's server and token, looks up the
pool's app (made if missing; kept), reuses the template's resolved image and secrets
(``providers.modal.handles``), and creates the run's sandbox, named from the run id and
attempt and tagged with run, attempt, pool and deployment. A retried submit first looks
the name up and adopts what it finds. A GPU sandbox is Modal's older kind, which the
public name lookup finds only while it runs, so its id is also recorded in a Modal Dict
per app (``ids_dict_name``) right after the create: a retry after it finished reads the
id there instead of making a second sandbox. The ``InfraRef`` carries the server, environment,
app and token (or where to read it), so any process can follow the run.

Status is a ``timeout=0`` poll per sandbox; many refs of one app are first matched
against one listing of the app's running sandboxes, so only the ones that stopped (or
are not listed yet) cost a poll each. The ``modal`` SDK is imported inside the calls
(it is heavy); this module imports only pushpool code.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from providers.base import (
    InfraPhase,
    InfraRef,
    InfraStatus,
    JobSpec,
    LogBatch,
    PermanentProviderError,
    ProviderConfig,
    ProvisionPlan,
    ProvisionStep,
    RetryableProviderError,
)
from providers.env_settings import values_from_env
from providers.modal.config import ModalConfig, parse_config
from providers.modal.config import default_base_job_template as _default_template
from providers.modal.config import validate_config as _validate_config
from providers.modal.connection import Clients, Connection, app_name_for, resolve
from providers.modal.errors import translate
from providers.modal.handles import Handles, Resolved
from providers.modal.logs import Readers, SandboxReaders, read_batch
from providers.modal.sandbox import (
    POOL_TAG,
    build_image,
    command_of,
    create_kwargs,
    handles_key,
    sandbox_name,
    secret_handles,
)
from providers.modal.status import missing_status, returncode_status
from providers.provision_options import ProvisionOption

__all__ = ["PROVIDER", "ModalProvider", "ModalSettings", "console_url"]

T = TypeVar("T")


@dataclass(frozen=True)
class ModalSettings:
    """Tunables, read from ``PUSHPOOL_MODAL_<FIELD>`` (e.g. PUSHPOOL_MODAL_POLL_CONCURRENCY=64)."""

    poll_concurrency: int = 32  # timeout=0 polls in flight at once in status_many
    list_threshold: int = 8  # refs of one app from which status_many lists the app first
    log_first_wait: float = 0.5  # seconds to wait for a stream's first chunk
    log_idle: float = 0.1  # a stream quiet this long ends the batch
    log_budget: float = 2.0  # seconds one logs() call reads at most
    log_max_lines: int = 10000
    readers_kept: int = 2000  # sandboxes whose stream readers are kept between logs() calls
    # Bound on one adapter call's Modal round trips: the client itself retries an
    # unreachable server for about a minute, which would hold a run's lease that long.
    call_timeout: float = 30.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ModalSettings:
        return cls(**values_from_env(cls, "PUSHPOOL_MODAL_", environ))


def console_url(app_id: str) -> str:
    """The app's page on Modal's dashboard (what ``App.get_dashboard_url`` gives)."""
    return f"https://modal.com/id/{app_id}"


def connection_of(ref: InfraRef) -> Connection:
    return Connection.from_facts(ref.connection or {})


async def bounded(call: Awaitable[T], seconds: float, doing: str) -> T:
    """``call``, or RetryableProviderError once it has taken ``seconds`` (cancelling it;
    a create cut short is found again by name on the retry)."""
    try:
        async with asyncio.timeout(seconds):  # no task of its own, unlike wait_for
            return await call
    except TimeoutError:
        raise RetryableProviderError(
            f"Modal {doing} took longer than {seconds:g} s (is the Modal server reachable?); "
            "it will be tried again") from None


def ids_dict_name(app_name: str) -> str:
    """The Modal Dict holding a pool's GPU sandbox ids by sandbox name (≤ 64 chars)."""
    name = f"{app_name}-sandbox-ids"
    if len(name) > 64:
        digest = hashlib.sha256(app_name.encode()).hexdigest()[:8]
        name = f"{app_name[:43]}-{digest}-sandbox-ids"
    return name


class ModalProvider:
    """Modal push pools (``modal:push``)."""

    pool_type: ClassVar[str] = "modal:push"
    config_model: ClassVar[type[ProviderConfig]] = ModalConfig
    # What ``provision`` takes (``work-pool create --provision-infra --infra-option``);
    # the token comes from MODAL_TOKEN_ID / MODAL_TOKEN_SECRET or the modal profile.
    provision_options: ClassVar[tuple[ProvisionOption, ...]] = (
        ProvisionOption("server_url", "Modal server (default: MODAL_SERVER_URL, else "
                        "Modal's)", aliases=("endpoint_url",)),
        ProvisionOption("environment", "Modal environment (default: the workspace's)"),
        ProvisionOption("app_name", "the pool's Modal app (default: pushpool-<pool>)"),
    )
    # A poll is one cheap unary call (or one listing for many runs) and sandboxes start
    # in seconds, so poll often.
    poll_interval: ClassVar[float] = float(os.environ.get("PUSHPOOL_MODAL_POLL_INTERVAL")
                                           or 2.0)

    def __init__(self, settings: ModalSettings | None = None):
        self.settings = settings or ModalSettings.from_env()
        self.clients = Clients()
        self.readers = Readers(self.settings.readers_kept)
        # Images and named secrets per (client, environment, template content): once a
        # create has resolved them, later creates reuse their ids instead of asking again.
        self.handles = Handles()
        self._dicts: dict[tuple[Any, ...], Any] = {}

    # ------------------------------------------------------------------ configuration

    def default_base_job_template(self) -> dict[str, Any]:
        return _default_template()

    def validate_config(self, config: Mapping[str, Any]) -> None:
        _validate_config(config)

    @staticmethod
    def _config(config: Mapping[str, Any]) -> ModalConfig:
        try:
            return _validate_config(config)
        except ValueError as exc:
            raise PermanentProviderError(f"invalid modal:push job configuration: {exc}") from None

    # ------------------------------------------------------------------ submit

    async def submit(self, spec: JobSpec) -> InfraRef:
        cfg = self._config(spec.config)
        conn = resolve(cfg, spec.pool_name)
        try:
            command = command_of(spec, cfg)
        except ValueError as exc:
            raise PermanentProviderError(str(exc)) from None
        app, sandbox = await bounded(self._submit(conn, spec, cfg, command),
                                     self.settings.call_timeout, "create sandbox")
        facts = {**conn.facts(), "app_id": app.app_id, "pool": spec.pool_name,
                 "submitted_at": time.time()}
        if cfg.gpu:  # cleanup drops the recorded id
            facts["ids_dict"] = ids_dict_name(conn.app_name)
            facts["sandbox_name"] = sandbox_name(spec.run_id, spec.attempt)
        return InfraRef(sandbox.object_id, facts, console_url(app.app_id))

    async def _submit(self, conn: Connection, spec: JobSpec, cfg: ModalConfig,
                      command: list[str]) -> tuple[Any, Any]:
        try:
            client = await self.clients.client(conn)
            app = await self.clients.app(conn)
            # A first call skips the lookup: a same-named create that loses a race adopts.
            sandbox = await self._find(conn, client, spec, cfg) if spec.retried else None
            if sandbox is None:
                sandbox = await self._create(conn, client, app, spec, cfg, command)
            return app, sandbox
        except ValueError as exc:
            raise PermanentProviderError(str(exc)) from None
        except Exception as exc:
            from modal.exception import NotFoundError

            if isinstance(exc, NotFoundError):  # perhaps the kept app was stopped
                self.clients.forget_app(conn)
            raise translate(exc, "create sandbox") from exc

    async def _find(self, conn: Connection, client: Any, spec: JobSpec,
                    cfg: ModalConfig) -> Any | None:
        """The sandbox this (run, attempt) already made, live or finished, if any: a
        crash can fall between the create and recording its answer."""
        import modal
        from modal.exception import NotFoundError

        name = sandbox_name(spec.run_id, spec.attempt)
        environment = conn.environment or None
        try:
            return await modal.Sandbox.from_name.aio(conn.app_name, name, include_terminated=True,
                                                     environment_name=environment,
                                                     client=client)
        except NotFoundError:
            pass
        if cfg.gpu:
            # GPU sandboxes are Modal's V1 kind: the name lookup finds them only while
            # they run; a finished one is found by the id recorded after its create.
            try:
                return await modal.Sandbox.from_name.aio(conn.app_name, name,
                                                         environment_name=environment,
                                                         client=client)
            except NotFoundError:
                pass
            recorded = await self._ids(conn, client).get.aio(name)
            if isinstance(recorded, str) and recorded:
                try:
                    return await modal.Sandbox.from_id.aio(recorded, client=client)
                except NotFoundError:
                    pass
        return None

    def _ids(self, conn: Connection, client: Any) -> Any:
        """The pool's Dict of GPU sandbox ids (a lazy handle: made on first use)."""
        import modal

        key = (conn.client_key(), conn.environment, conn.app_name)
        handle = self._dicts.get(key)
        if handle is None:
            handle = self._dicts[key] = modal.Dict.from_name(
                ids_dict_name(conn.app_name), environment_name=conn.environment or None,
                create_if_missing=True, client=client)
        return handle

    async def _create(self, conn: Connection, client: Any, app: Any, spec: JobSpec,
                      cfg: ModalConfig, command: list[str]) -> Any:
        import modal
        from modal.exception import AlreadyExistsError

        def make() -> Resolved:
            return Resolved(build_image(cfg, spec.image or cfg.image), secret_handles(cfg))

        async def create(handles: Resolved) -> Any:
            kwargs = create_kwargs(spec, cfg, app, client, handles.image, handles.secrets)
            try:
                sandbox = await modal.Sandbox.create.aio(*command, **kwargs)
            except AlreadyExistsError:
                # A concurrent submit of the same attempt won the name: adopt its sandbox.
                found = await self._find(conn, client, spec, cfg)
                if found is None:
                    raise
                return found
            if cfg.gpu:
                # At once: a crash between here and the dispatcher storing the reference
                # is what a retry recovers from (while it runs, the name finds it too).
                await self._ids(conn, client).put.aio(kwargs["name"], sandbox.object_id)
            return sandbox

        key = (conn.client_key(), conn.environment, *handles_key(spec, cfg))
        return await self.handles.create_with(key, make, create)

    # ------------------------------------------------------------------ status

    async def status(self, ref: InfraRef) -> InfraStatus:
        answer = await self.status_many([ref])
        if ref.infra_id not in answer:
            raise RetryableProviderError(f"no status for Modal sandbox {ref.infra_id} yet; "
                                         "try again")
        return answer[ref.infra_id]

    async def status_many(self, refs: Sequence[InfraRef]) -> dict[str, InfraStatus]:
        """Statuses by sandbox id: per app, one listing of its running sandboxes when
        there are ``list_threshold`` refs or more, then a ``timeout=0`` poll for each
        ref not listed (at most ``poll_concurrency`` at once).

        Ids whose read failed for a transient reason are left out (ask again later); if
        every read failed that way the error is raised.
        """
        result: dict[str, InfraStatus] = {}
        groups: dict[tuple[Connection, str], list[InfraRef]] = {}
        for ref in refs:
            try:
                conn = connection_of(ref)
            except PermanentProviderError as exc:
                result[ref.infra_id] = InfraStatus(InfraPhase.CRASHED, None, str(exc))
                continue
            app_id = str((ref.connection or {}).get("app_id") or "")
            groups.setdefault((conn, app_id), []).append(ref)
        semaphore = asyncio.Semaphore(self.settings.poll_concurrency)
        transient: list[BaseException] = []
        attempted = 0
        for (conn, app_id), members in groups.items():
            client = await self._client(conn)
            pending = members
            if app_id and len(members) >= self.settings.list_threshold:
                attempted += 1
                try:
                    running = await bounded(self._running_ids(client, app_id, members),
                                            self.settings.call_timeout, "list sandboxes")
                except Exception as exc:
                    error = translate(exc, "list sandboxes")
                    if not isinstance(error, RetryableProviderError):
                        raise error from exc
                    transient.append(error)
                    running = set()
                for ref in members:
                    if ref.infra_id in running:
                        result[ref.infra_id] = InfraStatus(InfraPhase.RUNNING)
                pending = [ref for ref in members if ref.infra_id not in running]
            attempted += len(pending)
            outcomes = await asyncio.gather(
                *(bounded(self._poll(client, ref.infra_id, semaphore),
                          self.settings.call_timeout, "poll sandbox") for ref in pending),
                return_exceptions=True)
            for ref, outcome in zip(pending, outcomes, strict=True):
                if isinstance(outcome, RetryableProviderError):
                    transient.append(outcome)
                elif isinstance(outcome, BaseException):
                    raise outcome
                else:
                    result[ref.infra_id] = outcome
        if transient and len(transient) == attempted:
            raise transient[0]
        return result

    @staticmethod
    async def _running_ids(client: Any, app_id: str, members: list[InfraRef]) -> set[str]:
        """The ids among ``members`` that the app's listing shows running (the listing
        is paged newest first; it stops once every member has been seen)."""
        import modal

        wanted = {ref.infra_id for ref in members}
        pool = str((members[0].connection or {}).get("pool") or "")
        tags = {POOL_TAG: pool} if pool else None
        seen: set[str] = set()
        listing = modal.Sandbox.list.aio(app_id=app_id, tags=tags, client=client)
        try:
            async for sandbox in listing:
                if sandbox.object_id in wanted:
                    seen.add(sandbox.object_id)
                    if seen == wanted:
                        break
        finally:
            await listing.aclose()
        return seen

    @staticmethod
    async def _poll(client: Any, sandbox_id: str, semaphore: asyncio.Semaphore) -> InfraStatus:
        """One ``timeout=0`` poll: ``Sandbox.from_id`` is a SandboxWait that returns at
        once with the result, if there is one."""
        import modal
        from modal.exception import NotFoundError

        async with semaphore:
            try:
                sandbox = await modal.Sandbox.from_id.aio(sandbox_id, client=client)
            except NotFoundError as exc:
                return missing_status(sandbox_id, str(exc))
            except Exception as exc:
                raise translate(exc, "poll sandbox") from exc
        return returncode_status(sandbox.returncode)

    # ------------------------------------------------------------------ cancel / cleanup

    async def cancel(self, ref: InfraRef, grace_seconds: float = 30.0) -> None:
        """Terminate the sandbox. Modal's terminate takes no grace period: the command is
        stopped at once (``grace_seconds`` is not used). A finished or unknown sandbox is
        left as it is."""
        await bounded(self._terminate(ref, "terminate sandbox"), self.settings.call_timeout,
                      "terminate sandbox")

    async def _terminate(self, ref: InfraRef, doing: str) -> None:
        import modal
        from modal.exception import NotFoundError

        client = await self._client_for(ref)
        try:
            sandbox = await modal.Sandbox.from_id.aio(ref.infra_id, client=client)
            if sandbox.returncode is None:
                await sandbox.terminate.aio()
        except NotFoundError:
            return
        except Exception as exc:
            raise translate(exc, doing) from exc

    async def cleanup(self, ref: InfraRef) -> None:
        """Nothing lingers: terminate the sandbox if it somehow still runs, and drop its
        stream readers. Modal keeps finished sandboxes' records itself."""
        self.readers.drop(ref.infra_id)
        await bounded(self._clean_up(ref), self.settings.call_timeout, "clean up sandbox")

    async def _clean_up(self, ref: InfraRef) -> None:
        await self._terminate(ref, "clean up sandbox")
        name = str((ref.connection or {}).get("sandbox_name") or "")
        if not name:
            return
        conn = connection_of(ref)
        client = await self._client(conn)
        try:
            await self._ids(conn, client).pop.aio(name, None)
        except Exception as exc:
            raise translate(exc, "clean up sandbox") from exc

    async def _client_for(self, ref: InfraRef) -> Any:
        return await self._client(connection_of(ref))

    async def _client(self, conn: Connection) -> Any:
        try:
            return await self.clients.client(conn)
        except Exception as exc:
            raise translate(exc, "connect") from exc

    # ------------------------------------------------------------------ logs

    async def logs(self, ref: InfraRef, cursor: str | None) -> LogBatch:
        """Lines of stdout and stderr after ``cursor`` (see ``providers.modal.logs``)."""
        return await bounded(self._logs(ref, cursor),
                             self.settings.call_timeout + self.settings.log_budget,
                             "read sandbox output")

    async def _logs(self, ref: InfraRef, cursor: str | None) -> LogBatch:
        import modal
        from modal.exception import NotFoundError

        entry = self.readers.get(ref.infra_id)
        try:
            if entry is None:
                client = await self._client_for(ref)
                sandbox = await modal.Sandbox.from_id.aio(ref.infra_id, client=client)
                entry = SandboxReaders(sandbox)
                self.readers.put(ref.infra_id, entry)
            async with entry.lock:
                s = self.settings
                return await read_batch(entry, cursor, first=s.log_first_wait, idle=s.log_idle,
                                        budget=s.log_budget, max_lines=s.log_max_lines)
        except NotFoundError:
            self.readers.drop(ref.infra_id)
            return LogBatch([], cursor)
        except ValueError as exc:
            raise PermanentProviderError(str(exc)) from None
        except Exception as exc:
            self.readers.drop(ref.infra_id)  # a broken stream: start afresh next time
            raise translate(exc, "read sandbox output") from exc

    # ------------------------------------------------------------------ provisioning

    async def provision(self, pool_name: str, options: Mapping[str, Any], apply: bool = False,
                        *, on_step: Callable[[ProvisionStep], None] | None = None
                        ) -> ProvisionPlan:
        """Modal needs no infrastructure but the pool's app, which submit also makes when
        missing; this looks it up (and makes it when ``apply``) so a wrong token or server
        shows now."""
        import modal
        from modal.exception import NotFoundError

        try:
            cfg = parse_config({k: v for k, v in options.items()
                                if k in ModalConfig.model_fields})
        except ValueError as exc:
            raise PermanentProviderError(str(exc)) from None
        conn = resolve(cfg, pool_name)
        target = f"Modal at {conn.server_url}, environment {conn.environment or '(default)'}"
        try:
            client = await self.clients.client(conn)
            try:
                await modal.App.lookup.aio(conn.app_name, create_if_missing=False,
                                           environment_name=conn.environment or None,
                                           client=client)
                step = ProvisionStep("modal app", conn.app_name, "exists")
            except NotFoundError:
                step = ProvisionStep("modal app", conn.app_name, "create",
                                     "also made by the first run if missing")
                if apply:
                    await self.clients.app(conn, create=True)
        except Exception as exc:
            raise translate(exc, "look up app") from exc
        if on_step is not None:
            on_step(step)
        return ProvisionPlan(target, [step], {"app_name": conn.app_name})

    async def deprovision(self, pool_name: str, provisioned: Mapping[str, Any],
                          apply: bool = False, *,
                          on_step: Callable[[ProvisionStep], None] | None = None
                          ) -> ProvisionPlan:
        """Modal apps keep the history of the pool's runs, so pushpool leaves the app in
        place (``modal app stop <name>`` removes it); nothing is deleted."""
        defaults = provisioned.get("template_defaults") or {}
        name = str(defaults.get("app_name") or "") or app_name_for(pool_name)
        step = ProvisionStep("modal app", name, "keep",
                             f"kept with its run history; `modal app stop {name}` removes it")
        if on_step is not None:
            on_step(step)
        return ProvisionPlan(str(provisioned.get("target") or "Modal"), [step])

    async def close(self) -> None:
        self.readers.clear()
        self.handles.clear()
        self._dicts.clear()
        await self.clients.close()


PROVIDER = ModalProvider()
