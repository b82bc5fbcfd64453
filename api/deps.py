"""Request dependencies: the store, settings and the query parameters shared by several endpoints."""

from __future__ import annotations

from fastapi import Request

from geo.store import Store


def get_store(request: Request) -> Store:
    """The service's store (read-only, follows published versions)."""
    return request.app.state.store


def get_settings(request: Request) -> dict:
    """The service's settings."""
    return request.app.state.settings
