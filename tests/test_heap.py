"""dispatcher/engine/heap.py: a server process freezes its long-lived objects once per
reason; anything else (these tests' own process among them) is left alone."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap


def test_freezing_happens_only_when_enabled_and_once_per_reason() -> None:
    script = textwrap.dedent("""
        import gc
        from dispatcher.engine import heap

        assert not heap.freeze_long_lived("start-up")  # not a server process
        assert gc.get_freeze_count() == 0
        heap.enable()
        assert heap.freeze_long_lived("start-up")
        frozen = gc.get_freeze_count()
        assert frozen > 1000, frozen  # the interpreter's and the imports' objects
        assert not heap.freeze_long_lived("start-up")  # once per reason
        kept = [[i] for i in range(5000)]  # made after: still collectable
        assert gc.get_freeze_count() == frozen
        assert heap.freeze_long_lived("noop")
        assert gc.get_freeze_count() >= frozen + 5000
        print("ok", len(kept))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok 5000"


def test_an_embedded_engine_leaves_the_heap_of_its_host_process_alone() -> None:
    from dispatcher.engine import heap

    assert not heap.freeze_long_lived("process")
    assert gc.get_freeze_count() == 0
