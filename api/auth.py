"""Token authentication: ``Depends(require_role("inspector"))`` on an endpoint, checked before its body.

Every endpoint with a role dependency is also checked by :class:`AuthFirstRoute` before FastAPI reads and validates
the request's body, so a write without a token (or with a weaker role) is a 401 (403) even when its body is
malformed, never a 422 that tells an anonymous caller what the endpoint would take.
"""

from __future__ import annotations

from collections.abc import Callable

from civicgrid.api.deps import get_settings, get_store
from civicgrid.geo.errors import AuthenticationError, InvalidParameterError
from civicgrid.geo.settings import PUBLIC_LAYERS
from civicgrid.geo.store import Store
from civicgrid.geo.users import ROLES, authenticate, authorize, check_role
from fastapi import Depends, Request
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

#: The ``Authorization: Bearer <token>`` scheme (shown as "Authorize" in the OpenAPI docs). A missing or
#: malformed header is left to :func:`require_role`, which answers 401 in the service's error format.
bearer = HTTPBearer(auto_error=False, description="a token from `civicgrid users add NAME --role ROLE`")

#: Where :class:`AuthFirstRoute` leaves the user it authenticated (``request.scope["state"]``).
USER_KEY = "civicgrid_user"


def _token(header: str) -> str | None:
    """The token of an ``Authorization`` header (None without one); a header that is not ``Bearer <token>``
    (the bare token, ``Token …``) raises, saying how to write it."""
    header = header.strip()
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    msg = (f"the Authorization header must read 'Bearer <token>' (got {scheme!r} before the token)"
           if " " in header else "the Authorization header must read 'Bearer <token>': 'Bearer ' is missing")
    raise AuthenticationError(msg)


#: The cookie a browser keeps its token in after ``/signin`` (:mod:`civicgrid.api.routers.signin`). It counts for
#: reads only (GET and HEAD: pages, layers, plans): a write needs the ``Authorization`` header, so that another
#: site cannot make a signed-in browser write (no cross-site request forgery).
TOKEN_COOKIE = "civicgrid_token"


def request_user(request: Request, store: Store) -> dict | None:
    """The active user whose bearer token the request carries (for a read, or the token of the browser's sign-in
    cookie :data:`TOKEN_COOKIE`), None without either.

    Raises
    ------
    AuthenticationError
        A malformed header, an unknown or revoked token, a disabled user (HTTP 401).
    """
    state = request.scope.setdefault("state", {})
    if USER_KEY in state:
        return state[USER_KEY]
    token = _token(request.headers.get("authorization", ""))
    if token is None and request.method in ("GET", "HEAD"):
        token = request.cookies.get(TOKEN_COOKIE) or None
    user = None if token is None else authenticate(store, token)
    state[USER_KEY] = user
    return user


def caller_role(request: Request) -> str | None:
    """The role of the user this request was authenticated as (by a role or layer dependency, or
    :class:`AuthFirstRoute`), None for an anonymous caller or when the endpoint did not authenticate it: what
    keys answers that show a caller with a token more (:mod:`civicgrid.api.cache`)."""
    user = request.scope.get("state", {}).get(USER_KEY)
    return None if user is None else str(user["role"])


def require_role(role: str) -> Callable[..., dict]:
    """A dependency admitting a request whose bearer token belongs to an active user of ``role`` or stronger.

    No or an invalid token: :class:`~geo.errors.AuthenticationError` (401); a weaker role:
    :class:`~geo.errors.PermissionDeniedError` (403). The dependency returns the user (``name``, ``role``).
    Roles, weakest first: ``viewer`` < ``inspector`` < ``admin``.
    """
    need = check_role(role)

    def dependency(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
                   store: Store = Depends(get_store)) -> dict:
        user = request_user(request, store)
        return authorize(authenticate(store, None) if user is None else user, need)

    dependency.__name__ = f"require_{need}"
    dependency.civicgrid_role = need  # type: ignore[attr-defined]  # read by AuthFirstRoute
    return dependency


def optional_user(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
                  store: Store = Depends(get_store)) -> dict | None:
    """The caller when the request carries a token (an invalid one is a 401), else None: for public answers
    that show more to a ``viewer`` (site contacts)."""
    return request_user(request, store)


def layer_access(layer: str) -> Callable[..., dict | None]:
    """A dependency for the reference layer ``layer``: public (setting ``public_layers``) answers anyone and
    returns the caller or None; otherwise a ``viewer`` token is needed (401 without one)."""
    if layer not in PUBLIC_LAYERS:
        msg = f"unknown layer {layer!r}; layers: {', '.join(PUBLIC_LAYERS)}"
        raise InvalidParameterError(msg)

    def dependency(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
                   store: Store = Depends(get_store), settings: dict = Depends(get_settings)) -> dict | None:
        user = request_user(request, store)
        if layer in settings.get("public_layers", PUBLIC_LAYERS):
            return user
        return authorize(authenticate(store, None) if user is None else user, "viewer")

    dependency.__name__ = f"layer_{layer.replace('-', '_')}"
    return dependency


def shows_layer(layer: str, user: dict | None, settings: dict) -> bool:
    """Whether the caller may see ``layer`` (a part of another answer, e.g. ``grid-leaders``): it is public,
    or the caller has a token."""
    return user is not None or layer in settings.get("public_layers", PUBLIC_LAYERS)


def _route_role(route: APIRoute) -> str | None:
    todo = [route.dependant]
    while todo:
        d = todo.pop()
        role = getattr(d.call, "civicgrid_role", None)
        if role is not None:
            return role
        todo.extend(d.dependencies)
    return None


class AuthFirstRoute(APIRoute):
    """The route class of every router: an endpoint with a role dependency (:func:`require_role`) checks the
    token before FastAPI reads and validates the request's body, so without a token, with a bad one or a
    weaker role the answer is 401 or 403 whatever the body holds (FastAPI alone would answer 422 first)."""

    def get_route_handler(self):
        handler = super().get_route_handler()
        role = _route_role(self)
        if role is None:
            return handler

        async def route_handler(request: Request):
            store = request.app.state.store
            user = await run_in_threadpool(request_user, request, store)
            if user is None:
                authenticate(store, None)  # raises: a token is required
            authorize(user, role)
            return await handler(request)

        return route_handler


__all__ = ["ROLES", "USER_KEY", "AuthFirstRoute", "caller_role", "layer_access", "optional_user", "require_role",
           "shows_layer"]
