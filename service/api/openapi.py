"""The OpenAPI document states the rules that span fields, and the arms this process serves.

Pydantic's schema says what each field may hold; a few rules relate fields or depend on what
is loaded, and a client (or a fuzzer) reading only the schema would send requests the service
must refuse. So the generated document is completed here:
- an event of type `rating` needs a `value` on the 0.5-5 scale (`if`/`then`);
- `/v1/retrieve` takes exactly one of `item_id`, `items`, `embedding`, `history` (`oneOf`);
- the `X-Duet-Arm` header (when honoured) and a reload's `arm` name one of the loaded arms
  (`enum`), and a reload naming a `bundle` names its `arm` when there are several;
- an `embedding` holds as many values as the served bundles' dimension;
- with `DUET_ADMIN_BUNDLE_ROOT`, a reload's `bundle` is a path under it: relative with no `..`
  component, or absolute below the root (symbolic links are not followed by a pattern: the
  service still resolves and refuses them, 422).

`filters.year_min <= filters.year_max` is not expressible in JSON Schema: an inverted range is
an empty range, and matches no item (200, an empty page).

The document is rebuilt when the arm table changes (a reload may re-read the experiment).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from service.api.deps import ARM_HEADER
from service.api.schemas import RATING_SCALE

RETRIEVE_QUERIES = ("item_id", "items", "embedding", "history")
BY_ITEMS = ("item_id", "items")


def install(app: FastAPI) -> None:
    """Replace `app.openapi` with the completed document (cached per arm table)."""
    cache: dict[tuple[bool, tuple[str, ...], tuple[int, ...]], dict[str, Any]] = {}

    def openapi() -> dict[str, Any]:
        arms = _arm_names(app)
        if arms not in cache:
            cache.clear()
            document = get_openapi(
                title=app.title,
                version=app.version,
                openapi_version=app.openapi_version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
                tags=app.openapi_tags,
                servers=app.servers,
                separate_input_output_schemas=app.separate_input_output_schemas,
            )
            complete(document, arms[1], override=arms[0], dims=arms[2])
            root = getattr(getattr(app.state, "settings", None), "admin_bundle_root", None)
            bundle = document["components"]["schemas"].get("ReloadRequest", {})
            if root is not None and "bundle" in bundle.get("properties", {}):
                bundle["properties"]["bundle"]["pattern"] = under_root(Path(root))
            cache[arms] = document
        return cache[arms]

    setattr(app, "openapi", openapi)  # noqa: B010 - FastAPI's documented override point


def _arm_names(app: FastAPI) -> tuple[bool, tuple[str, ...], tuple[int, ...]]:
    """Whether `X-Duet-Arm` is honoured, the loaded arms (none before the first load) and
    their embedding dimensions."""
    holder = getattr(app.state, "arms", None)
    router = getattr(holder, "current", None)
    if router is None:
        return False, (), ()
    config = getattr(router, "config", None)
    dims = tuple(sorted({arm.bundle.encoder.dim for arm in router.arms.values()}))
    return bool(getattr(config, "allow_override", False)), tuple(router.arms), dims


def complete(
    document: dict[str, Any], arms: tuple[str, ...], *, override: bool, dims: tuple[int, ...]
) -> None:
    """Add the rules of the module doc to a generated `document`."""
    schemas = document.get("components", {}).get("schemas", {})
    if "EventIn" in schemas:
        low, high = RATING_SCALE
        schemas["EventIn"]["if"] = {
            "properties": {"type": {"const": "rating"}},
            "required": ["type"],
        }
        schemas["EventIn"]["then"] = {
            "properties": {"value": {"type": "number", "minimum": low, "maximum": high}},
            "required": ["value"],
        }
    if "RetrieveRequest" in schemas:
        schemas["RetrieveRequest"]["oneOf"] = [_only(name) for name in RETRIEVE_QUERIES]
        if len(dims) == 1:  # one dimension served: an embedding holds exactly that many
            for option in schemas["RetrieveRequest"]["properties"]["embedding"].get("anyOf", []):
                if option.get("type") == "array":
                    option["minItems"] = option["maxItems"] = dims[0]
    if arms:
        _name_arms(document, schemas, list(arms), override=override)


_NAME = r"[^/\x00.][^/\x00]{0,254}|\.|\.[^/\x00.][^/\x00]{0,253}|\.\.[^/\x00]{1,253}"
_PART = f"(?:{_NAME}|)"  # a path component that is not `..` (empty: a doubled slash)
_REGEX_SPECIAL = set(".^$*+?()[]{}|\\")


def under_root(root: Path) -> str:
    """A pattern for paths under `root`: components of at most 255 characters, none `..`,
    no NUL; relative, or absolute starting with the resolved root."""
    prefix = "".join("\\" + c if c in _REGEX_SPECIAL else c for c in str(root.resolve()))
    return f"^(?:{prefix}(?:/{_PART})*|(?:{_NAME})(?:/{_PART})*)$"


def _only(name: str) -> dict[str, Any]:
    """`name` given (not null), the other queries absent or null; `user_id` and the
    complementary relation only with `item_id` or `items`."""
    others: dict[str, Any] = {o: {"type": "null"} for o in RETRIEVE_QUERIES if o != name}
    if name not in BY_ITEMS:
        others["user_id"] = {"type": "null"}
        others["relation"] = {"const": "similar"}
    return {"required": [name], "properties": {name: {"not": {"type": "null"}}, **others}}


def _name_arms(
    document: dict[str, Any], schemas: dict[str, Any], arms: list[str], *, override: bool
) -> None:
    """An ignored header (overrides not allowed) may hold anything: only an honoured one is an
    enum."""
    for path in document.get("paths", {}).values() if override else ():
        for operation in path.values():
            for parameter in operation.get("parameters", []):
                if parameter.get("name") == ARM_HEADER and parameter.get("in") == "header":
                    parameter["schema"] = {"type": "string", "enum": arms}
    reload = schemas.get("ReloadRequest")
    if reload is None:
        return
    reload["properties"]["arm"] = {
        **{k: v for k, v in reload["properties"]["arm"].items() if k != "anyOf"},
        "anyOf": [{"type": "string", "enum": arms}, {"type": "null"}],
    }
    if len(arms) > 1:
        reload["if"] = {
            "properties": {"bundle": {"type": "string"}},
            "required": ["bundle"],
        }
        reload["then"] = {
            "properties": {"arm": {"type": "string", "enum": arms}},
            "required": ["arm"],
        }
