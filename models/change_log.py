"""The slice of a bundle's live-catalog change log that `models compact` folds in.

The log is Redis's (service/catalog/changes.py), named by the bundle's `change_log`: its own
version, or the log a compacted bundle continues. The slice runs from where the bundle starts
(the beginning, or its own `compacted_from.position`) to the log's head, read together with the
change counter in one MULTI, so the position and catalog version recorded in the new manifest
name exactly the changes folded. Changes logged after the head stay in the log: the service
replays them on top of the new bundle.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.bundle_files import ExportError
from service.catalog.changes import Change, ChangeLog
from service.catalog.manifest import Manifest

PAGE = 1_000
_LISTED = 5


class ChangeLogError(ExportError):
    """The log cannot be folded into this bundle (another bundle's, or trimmed)."""


@dataclass(frozen=True)
class LogSlice:
    name: str
    after: str
    """Position the bundle already holds (exclusive)."""
    base_version: int
    position: str
    """Last position folded in (`after` when nothing was)."""
    version: int
    """The log's change count at `position`."""
    changes: list[Change]


def _key(position: str) -> tuple[int, int]:
    ms, _, seq = position.partition("-")
    return int(ms), int(seq or 0)


def _refuse_foreign(held: list[str], manifest: Manifest) -> None:
    name = manifest.change_log
    if not held or name in held:
        return
    listed = ", ".join(held[:_LISTED]) + (
        f" and {len(held) - _LISTED} more" if len(held) > _LISTED else ""
    )
    own = f" (its change log: {name})" if name != manifest.bundle_version else ""
    raise ChangeLogError(
        f"Redis holds catalog changes only for bundle version {listed}; "
        f"the bundle is version {manifest.bundle_version}{own}: refusing to compact"
    )


async def read_slice(changes: ChangeLog, manifest: Manifest, *, page: int = PAGE) -> LogSlice:
    """Every change after the bundle's start up to the log's head, oldest first."""
    _refuse_foreign(await changes.logs(), manifest)
    name = manifest.change_log
    start = manifest.compacted_from
    after, base = (start.position, start.catalog_version) if start else ("0-0", 0)
    head, count = await changes.head(name)
    folded: list[Change] = []
    cursor = after
    while _key(cursor) < _key(head):
        batch = await changes.read(name, cursor, count=page)
        if not batch:
            break
        folded += [c for c in batch if _key(c.position) <= _key(head)]
        cursor = batch[-1].position
    if base + len(folded) != count:
        raise ChangeLogError(
            f"change log {name}: {len(folded)} changes after {after} (catalog version {base}) "
            f"but its counter says {count}: the log was trimmed or rewritten"
        )
    position = folded[-1].position if folded else after
    return LogSlice(name, after, base, position, count, folded)
