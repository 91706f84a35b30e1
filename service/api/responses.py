"""The one mapping from the service's exception tree to HTTP answers."""

from __future__ import annotations

import logging

from fastapi.responses import JSONResponse

from service.errors import DuetError

log = logging.getLogger("service")


def error_response(exc: DuetError, method: str, path: str) -> JSONResponse:
    """`{"error": {code, message, field}}` with the exception's status; 503s say when to retry."""
    if exc.status_code >= 500:
        log.warning("%s %s: %s", method, path, exc.message)
    error = {"code": exc.code, "message": exc.message, "field": exc.field}
    headers = {"Retry-After": "1"} if exc.status_code == 503 else None
    return JSONResponse({"error": error}, status_code=exc.status_code, headers=headers)
