"""Readiness of a pod with several workers: every worker, not whichever one the probe reached.

The kubelet's probe lands on one worker (the kernel picks), so with `DUET_WORKERS > 1` each
worker marks itself ready in a directory the supervisor made (`DUET_WORKER_STATE_DIR`, set by
`python -m service`), one file per process id, and `/readyz` counts the marks of live
processes. A worker that dies leaves a mark with a dead pid, which is not counted; the one the
supervisor spawns in its place marks itself once it is ready. A worker is ready once it serves a
verified bundle and its Redis has answered since start (a later Redis outage does not take it
out: it serves fallbacks).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


class WorkerMarks:
    def __init__(self, directory: Path | None, expected: int) -> None:
        self.directory = directory if expected > 1 else None
        self.expected = expected
        self._mark = None if self.directory is None else self.directory / f"{os.getpid()}.ready"

    def mark_ready(self) -> None:
        if self._mark is None or self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = self._mark.with_suffix(".tmp")
        partial.write_text("ready\n", encoding="utf-8")
        partial.replace(self._mark)

    def clear(self) -> None:
        if self._mark is not None:
            with contextlib.suppress(FileNotFoundError):
                self._mark.unlink()

    def ready(self) -> int:
        """How many live workers are ready (this one alone when there is only one)."""
        if self.directory is None:
            return self.expected
        count = 0
        with contextlib.suppress(FileNotFoundError):
            for mark in self.directory.glob("*.ready"):
                if mark.stem.isdigit() and _alive(int(mark.stem)):
                    count += 1
        return count
