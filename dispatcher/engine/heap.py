"""Full garbage collections kept off the dispatch path of a server process.

CPython's full (generation 2) collection walks every object the collector tracks. A
server with the store, the API and a cloud SDK loaded tracks well over a hundred
thousand, and one such walk took 40-100 ms of the event loop's time on a 2-core host:
every run due in those milliseconds waited (bench/cloud_dispatch.py saw them as its
worst latencies). What start-up and an adapter's first calls load (modules, classes,
clients, sessions) lives as long as the process, so once it is loaded it is moved out
of the collector's sight with ``gc.freeze()``; what runs create afterwards is collected
as before, and the full walks that remain cover only that.

Only ``pushpool server start`` turns this on (``enable``): the process is the server's
own. An embedded server in someone else's process (the tests) leaves that heap alone.
"""

from __future__ import annotations

import gc

_enabled = False
_frozen_after: set[str] = set()


def enable() -> None:
    global _enabled
    _enabled = True


def freeze_long_lived(after: str) -> bool:
    """Freeze what the process holds now, once per ``after`` ("start-up", or the pool
    type whose first submit just answered); whether it did."""
    if not _enabled or after in _frozen_after:
        return False
    _frozen_after.add(after)
    gc.freeze()
    return True
