"""Small readers of the tiny bundle shared by the API tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def items(bundle: Path) -> list[dict[str, Any]]:
    loaded: list[dict[str, Any]] = json.loads((bundle / "items.json").read_text())
    return loaded


def users(bundle: Path) -> list[str]:
    loaded: list[str] = json.loads((bundle / "users.json").read_text())
    return loaded


def version(bundle: Path) -> str:
    return str(json.loads((bundle / "manifest.json").read_text())["bundle_version"])


def metric(text: str, name: str, **labels: str) -> float:
    """Value of one sample of a Prometheus exposition (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            return float(value)
    return 0.0
