"""Routing details the framework gets wrong for us: undecodable bodies and `Allow` headers.

FastAPI answers an undecodable body (e.g. not UTF-8) with a bare 400 `{"detail": ...}`, outside
the declared schema; here it becomes the same 422 `{"error": ...}` as any other invalid body.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.routing import Route

from service.errors import InvalidInputError


class BodyErrorsAreInput(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except HTTPException as exc:
                if exc.status_code != 400:
                    raise
                raise InvalidInputError(f"body: {exc.detail}", field="body") from exc

        return handle


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allow_every_method_of_a_path(app: FastAPI, routers: Iterable[APIRouter]) -> None:
    """A path served by several routes (GET, PATCH and DELETE of /admin/items/{id}) answers
    any other method 405 with *all* of its methods in `Allow`: Starlette would name only the
    first route's, which RFC 9110 (and schemathesis' ST205) counts as a wrong header."""
    by_path: dict[str, set[str]] = {}
    for route in (r for router in routers for r in router.routes):
        if isinstance(route, APIRoute):
            by_path.setdefault(route.path, set()).update(route.methods or ())
    for path, methods in by_path.items():
        others = [
            m for m in _METHODS if m not in methods and not (m == "HEAD" and "GET" in methods)
        ]
        if len(methods) < 2 or not others:
            continue
        allow = ", ".join(sorted(methods))

        async def not_allowed(_: Request, allow: str = allow) -> Response:
            return JSONResponse({"detail": "Method Not Allowed"}, 405, headers={"Allow": allow})

        app.router.routes.append(Route(path, not_allowed, methods=others, include_in_schema=False))
