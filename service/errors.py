"""The one exception tree of the service; `app.py` maps it to HTTP once.

DuetError                      base, never raised itself
├── BundleError                a bundle failed verification or loading (startup, swaps)
├── RequestError               the client's fault: 4xx
│   ├── InvalidInputError      422, names the offending field
│   ├── NotFoundError          404 (an unknown item for /similar)
│   └── PayloadTooLargeError   413, body over DUET_MAX_BODY_BYTES
└── UnavailableError           ours, transient: 503, the client retries
    ├── NotReadyError          no verified bundle loaded
    ├── OverloadedError        past DUET_MAX_INFLIGHT: shed at once
    └── StoreUnavailableError  Redis down, slow, or breaker open
"""

from __future__ import annotations


class DuetError(Exception):
    status_code = 500
    code = "internal"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class BundleError(DuetError):
    code = "bundle_invalid"


class RequestError(DuetError):
    status_code = 400
    code = "bad_request"


class InvalidInputError(RequestError):
    status_code = 422
    code = "invalid_input"


class NotFoundError(RequestError):
    status_code = 404
    code = "not_found"


class PayloadTooLargeError(RequestError):
    status_code = 413
    code = "payload_too_large"


class UnavailableError(DuetError):
    status_code = 503
    code = "unavailable"


class NotReadyError(UnavailableError):
    code = "not_ready"


class OverloadedError(UnavailableError):
    code = "overloaded"


class StoreUnavailableError(UnavailableError):
    code = "store_unavailable"
