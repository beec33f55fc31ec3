"""Which replica this server is: an id that stays the same when it restarts, so a restarted
server knows the claims its earlier process left behind are its own (engine/heartbeat.py).

``PUSHPOOL_REPLICA_ID`` names it; it must then be unique among the live replicas. Without
it the id is kept in ``PUSHPOOL_HOME``: ``replica-0.id``, made on first start. A server
holds ``replica-0.lock`` while it runs (the kernel lets go when the process ends, however
it ends), so a second server started on the same home at the same time takes slot 1, and
two live servers never share an id.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MAX_SLOTS = 64  # servers on one home at once


@dataclass
class ReplicaIdentity:
    replica_id: str
    lock_fd: int | None = None  # the held slot lock, None for a configured id

    def release(self) -> None:
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None


def replica_identity(home: Path, configured: str | None) -> ReplicaIdentity:
    """The configured id, else the id of the first slot in ``home`` no live server holds.
    A home that cannot be written gets a new id each start, with a warning: a restart then
    waits for the heartbeat timeout instead of taking its claims back at once."""
    if configured:
        return ReplicaIdentity(configured)
    try:
        home.mkdir(parents=True, exist_ok=True)
        for slot in range(MAX_SLOTS):
            fd = os.open(home / f"replica-{slot}.lock", os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            try:
                return ReplicaIdentity(_slot_id(home / f"replica-{slot}.id"), fd)
            except BaseException:
                os.close(fd)
                raise
        reason = f"{MAX_SLOTS} servers already run on this home"
    except OSError as exc:
        reason = f"{home} cannot be written ({exc.strerror or exc})"
    fresh = _new_id()
    log.warning("replica id %s is new to this start: %s; set PUSHPOOL_REPLICA_ID to keep "
                "one across restarts", fresh, reason)
    return ReplicaIdentity(fresh)


def _slot_id(path: Path) -> str:
    with contextlib.suppress(FileNotFoundError):
        kept = path.read_text(encoding="utf-8").strip()
        if kept:
            return kept
    made = _new_id()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(made + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return made


def _new_id() -> str:
    return f"replica-{uuid.uuid4().hex[:12]}"
