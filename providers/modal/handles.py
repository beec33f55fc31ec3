"""The image and named secrets a sandbox create refers to, resolved once per template.

A ``modal.Image`` or ``modal.Secret.from_name`` handle is lazy: the create that first uses
it asks Modal for its id (``ImageGetOrCreate``, ``SecretGetOrCreate``) and hydrates it, and
a hydrated handle costs no RPC again. ``Handles`` keeps them per key (client, environment,
image settings, secret names): the first create of a key runs alone, and creates of the
same key that arrive meanwhile wait for it, so a burst of first runs asks Modal once, not
once a run. A create with kept handles that Modal refuses as not found or invalid (a
secret deleted and made again has a new id) drops them and is made once more with handles
resolved afresh.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Resolved:
    image: Any
    secrets: tuple[Any, ...]


class Handles:
    """Resolved handles by key, at most ``limit`` keys (beyond: resolved per create)."""

    def __init__(self, limit: int = 1000) -> None:
        self.limit = limit
        self._kept: dict[Hashable, Resolved] = {}
        self._first: dict[Hashable, asyncio.Lock] = {}

    async def create_with(self, key: Hashable, make: Callable[[], Resolved],
                          create: Callable[[Resolved], Awaitable[T]]) -> T:
        """``create(handles)`` with the key's kept handles, or with new ones from
        ``make()`` kept once that create succeeded (it hydrated them)."""
        from modal.exception import InvalidError, NotFoundError

        kept = self._kept.get(key)
        if kept is not None:
            try:
                return await create(kept)
            except (NotFoundError, InvalidError):
                # Perhaps a kept id went stale: once more with handles resolved afresh.
                if self._kept.get(key) is kept:
                    del self._kept[key]
        async with self._first.setdefault(key, asyncio.Lock()):
            kept = self._kept.get(key)
            if kept is not None:
                return await create(kept)
            fresh = make()
            result = await create(fresh)
            if len(self._kept) < self.limit:
                self._kept[key] = fresh
            self._first.pop(key, None)
            return result

    def clear(self) -> None:
        self._kept.clear()
        self._first.clear()
