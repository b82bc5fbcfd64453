"""Answers of the read API kept per store version: the same request asked again before the next committed write
is answered from memory, and concurrent identical requests compute it once.

Each service process keeps up to the setting ``api_cache_responses`` answers (least recently used dropped first; 0:
none) in ``app.state.api_responses`` (shared with the service's other processes through the folder of the setting
``cache_dir``: an answer is computed once per service, not once per worker), keyed by the route's path, its query
(parameters sorted), the caller's role and the store version (:meth:`civicgrid.geo.store.Store.snapshot_id`). The
role check of the endpoint runs before the cache is asked (:class:`civicgrid.api.auth.AuthFirstRoute` and the
endpoint's dependencies), so a cached answer is never served to a caller who may not see it, and a revoked token is
refused on its next request. An answer that depends on "now" (KPIs: deadlines pass) says until when it holds and is
computed again from then.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from datetime import datetime
from typing import Any

from civicgrid.api.auth import caller_role
from civicgrid.geo.aggregate import EventFilter
from civicgrid.geo.caches import VersionCache
from civicgrid.geo.store import Store
from fastapi import Request
from fastapi.responses import Response

#: Headers of a computed answer kept with its body (the rest, e.g. the request id, belong to each request).
_KEPT_HEADERS = ("content-type", "content-disposition")


def response_cache(size: int, *, shared: str | os.PathLike | None = None) -> VersionCache:
    """The cache of API answers of one service process (``app.state.api_responses``), sharing its answers with
    the service's other processes through the folder ``shared`` (the setting ``cache_dir``) when one is given."""
    return VersionCache(size, shared=shared)


def cached_response(request: Request, store: Store, compute: Callable[[], Response], *,
                    holds_until: Callable[[], datetime | None] | None = None, cache: bool = True) -> Response:
    """The answer of ``compute()`` for this request, from the app's answer cache when it holds one for the
    store's current version.

    Parameters
    ----------
    request
        The request: its path, sorted query parameters and the caller's role key the answer.
    store
        The store the answer reads (its version keys it).
    compute
        Makes the answer (a 200 response; any other status is answered but not kept).
    holds_until
        For an answer that depends on "now": called before ``compute`` (so a change of the answer by time alone
        cannot fall between them), it returns the first moment the answer could differ, None if never.
    cache
        False answers ``compute()`` directly (e.g. an overdue filter pinned to "now" without an end).
    """
    responses: VersionCache | None = getattr(request.app.state, "api_responses", None)
    if not cache or responses is None or responses.size <= 0:
        return compute()
    key = ("api", request.url.path, tuple(sorted(request.query_params.multi_items())), caller_role(request))

    def make() -> tuple[tuple[bytes, int, tuple], float | None]:
        until = holds_until() if holds_until is not None else None
        response = compute()
        kept = tuple((k, v) for k, v in response.headers.items() if k in _KEPT_HEADERS)
        stamp = until.timestamp() if until is not None else None
        if response.status_code != 200:
            stamp = 0.0  # answered, never kept
        return (bytes(response.body), response.status_code, kept), stamp

    body, status, headers = responses.get_until(store, key, make)
    return Response(body, status_code=status, headers=dict(headers))


def cached_endpoint(endpoint: Callable[..., Response]) -> Callable[..., Response]:
    """Decorate a read endpoint (below its ``@router.get``) so that its answers go through
    :func:`cached_response`: same parameters (plus the request, when the endpoint does not take it), same answer.

    The endpoint must read the store it takes as ``store`` and nothing that changes with time alone; an event
    filter with ``status=overdue`` or an ``overdue`` parameter without ``as_of`` (read at "now") is answered
    without the cache.
    """
    signature = inspect.signature(endpoint, eval_str=True)
    takes_request = "request" in signature.parameters
    parameters = list(signature.parameters.values())
    if not takes_request:
        parameters.insert(0, inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                               annotation=Request))

    @functools.wraps(endpoint)
    def wrapper(**kwargs: Any) -> Response:
        request = kwargs["request"] if takes_request else kwargs.pop("request")
        filters = kwargs.get("filters")
        now_dependent = ((isinstance(filters, EventFilter) and filters.status == "overdue")
                         or (kwargs.get("overdue") is not None and kwargs.get("as_of") is None))
        return cached_response(request, kwargs["store"], lambda: endpoint(**kwargs), cache=not now_dependent)

    wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    return wrapper
