"""Token authentication for write endpoints: ``Depends(require_role("inspector"))``."""

from __future__ import annotations

from collections.abc import Callable

from civicgrid.api.deps import get_store
from civicgrid.geo.errors import AuthenticationError
from civicgrid.geo.store import Store
from civicgrid.geo.users import ROLES, authenticate, authorize, check_role
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

#: The ``Authorization: Bearer <token>`` scheme (shown as "Authorize" in the OpenAPI docs). A missing or
#: malformed header is left to :func:`require_role`, which answers 401 in the service's error format.
bearer = HTTPBearer(auto_error=False, description="a token from `civicgrid users add NAME --role ROLE`")


def require_role(role: str) -> Callable[..., dict]:
    """A dependency admitting a request whose bearer token belongs to an active user of ``role`` or stronger.

    No or an invalid token: :class:`~geo.errors.AuthenticationError` (401); a weaker role:
    :class:`~geo.errors.PermissionDeniedError` (403). The dependency returns the user (``name``, ``role``).
    Roles, weakest first: ``viewer`` < ``inspector`` < ``admin``.
    """
    need = check_role(role)

    def dependency(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
                   store: Store = Depends(get_store)) -> dict:
        header = request.headers.get("authorization", "").strip()
        if credentials is None and header:
            # a header that is not "Bearer <token>" (the bare token, "Token …"): say how to write it
            scheme = header.split()[0] if " " in header else "no scheme"
            msg = (f"the Authorization header must read 'Bearer <token>' (got {scheme!r} before the token)"
                   if " " in header else "the Authorization header must read 'Bearer <token>': 'Bearer ' is missing")
            raise AuthenticationError(msg)
        user = authenticate(store, credentials.credentials if credentials is not None else None)
        return authorize(user, need)

    dependency.__name__ = f"require_{need}"
    return dependency


__all__ = ["ROLES", "require_role"]
