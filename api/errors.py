"""Domain errors mapped to HTTP statuses, in one table."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from geo.errors import (
    AuthenticationError,
    ConflictError,
    InvalidParameterError,
    NotFoundError,
    PermissionDeniedError,
)
from geo.store import StoreError, StoreVersionError

#: Exception class -> HTTP status. Subclasses come before their bases.
DEFAULT_STATUS_CODES: dict[type[Exception], int] = {
    AuthenticationError: 401,
    PermissionDeniedError: 403,
    NotFoundError: 404,
    ConflictError: 409,
    InvalidParameterError: 422,
    StoreVersionError: 503,
    StoreError: 503,
}


def add_exception_handlers(app: FastAPI, status_codes: dict[type[Exception], int] | None = None) -> None:
    """Register a JSON ``{"detail": message}`` handler per domain error class."""
    for exc_type, status in (status_codes or DEFAULT_STATUS_CODES).items():

        def handler(request: Request, exc: Exception, status: int = status) -> JSONResponse:
            headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
            return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)

        app.add_exception_handler(exc_type, handler)
