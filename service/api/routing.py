"""Route class for body-taking routes: a body the framework cannot even decode is bad input.

FastAPI answers an undecodable body (e.g. not UTF-8) with a bare 400 `{"detail": ...}`, outside
the declared schema; here it becomes the same 422 `{"error": ...}` as any other invalid body.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

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
