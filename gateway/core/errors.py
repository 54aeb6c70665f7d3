"""One hierarchy of API errors. Each has an HTTP status and a stable ``code``; the handlers
in ``gateway/main.py`` turn them (and anything unexpected) into ``{"code", "message"}``
JSON, never a stack trace."""

from __future__ import annotations


class ApiError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, code: str | None = None, headers: dict[str, str] | None = None,
                 status: int | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status:
            self.status = status
        self.headers = headers or {}


class InvalidImage(ApiError):
    status = 422
    code = "invalid_image"


class UnsupportedMediaType(ApiError):
    status = 415
    code = "unsupported_media_type"


class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class RateLimited(ApiError):
    status = 429
    code = "rate_limited"


class ServiceUnavailable(ApiError):
    """A dependency (Triton, the database, Redis) cannot take the request now."""

    status = 503
    code = "service_unavailable"

    def __init__(self, message: str, code: str | None = None, retry_after_s: int = 1):
        super().__init__(message, code, {"Retry-After": str(retry_after_s)})
