"""Users, roles and API tokens: tokens are random, shown once, and stored only as a SHA-256 hash."""

from __future__ import annotations

import difflib
import hashlib
import os
import secrets

import duckdb
import pandas as pd
from civicgrid.geo.errors import (
    AuthenticationError,
    ConflictError,
    InvalidParameterError,
    NotFoundError,
    PermissionDeniedError,
)
from civicgrid.geo.store import Store, fetch_value, retry_writes, writing
from civicgrid.geo.times import now_local

#: Roles, weakest first: each role may do what the weaker ones may.
#: viewer: read cases and audit trails; inspector: create and move cases, plan patrols;
#: admin: users, settings (holidays, rebound rule) and imports.
ROLES = ("viewer", "inspector", "admin")
ROLE_RANK = {r: i for i, r in enumerate(ROLES)}
#: Prefix of every token (recognisable in logs and secret scanners).
TOKEN_PREFIX = "cg_"


def hash_token(token: str) -> str:
    """SHA-256 hex digest of a token. Tokens carry 256 random bits, so a fast hash is safe (no salt needed)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_role(role: str) -> str:
    """Return ``role`` if it is known, else raise naming the roles."""
    key = str(role).strip().lower()
    if key not in ROLE_RANK:
        close = difflib.get_close_matches(key, ROLES, n=1)
        msg = f"unknown role {role!r}" + (f"; did you mean {close[0]!r}?" if close else "") + \
              f" (roles: {', '.join(ROLES)})"
        raise InvalidParameterError(msg)
    return key


@retry_writes
def add_user(db: str | os.PathLike, name: str, *, role: str) -> tuple[dict, str]:
    """Create a user with a new token (atomic write).

    Returns
    -------
    (dict, str)
        The user (``user_id``, ``name``, ``role``, ``created_at``, ``active``) and the token, which is not
        stored and cannot be shown again.
    """
    role = check_role(role)
    name = (name or "").strip()
    if not name:
        msg = "a user needs a name"
        raise InvalidParameterError(msg)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with writing(db) as con:
        if fetch_value(con, "SELECT count(*) FROM users WHERE name = ?", [name]):
            msg = f"user {name!r} exists; choose another name or `civicgrid users token {name}` for a new token"
            raise ConflictError(msg)
        uid = int(fetch_value(con, "SELECT coalesce(max(user_id), 0) + 1 FROM users"))
        now = now_local()
        con.execute("INSERT INTO users VALUES (?, ?, ?, ?, ?, TRUE)", [uid, name, role, hash_token(token), now])
        user = con.execute("SELECT user_id, name, role, created_at, active FROM users WHERE user_id = ?",
                           [uid]).df().iloc[0].to_dict()
    return _plain(user), token


def _plain(row: dict) -> dict:
    out = {}
    for k, v in row.items():
        out[k] = v.to_pydatetime() if isinstance(v, pd.Timestamp) else (v.item() if hasattr(v, "item") else v)
    return out


def _find(con: duckdb.DuckDBPyConnection, name: str) -> int:
    row = con.execute("SELECT user_id FROM users WHERE name = ?", [name]).fetchone()
    if row is None:
        names = [r[0] for r in con.execute("SELECT name FROM users").fetchall()]
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.3)
        msg = f"no user {name!r}" + (f"; closest: {', '.join(close)}" if close else "")
        raise NotFoundError(msg)
    return int(row[0])


@retry_writes
def new_token(db: str | os.PathLike, name: str) -> str:
    """Replace a user's token with a new one (the old one stops working) and re-enable the user if disabled;
    return the new token."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with writing(db) as con:
        uid = _find(con, name)
        con.execute("UPDATE users SET token_hash = ?, active = TRUE WHERE user_id = ?", [hash_token(token), uid])
    return token


@retry_writes
def set_active(db: str | os.PathLike, name: str, *, active: bool) -> dict:
    """Disable (or re-enable) a user; a disabled user's token is refused."""
    with writing(db) as con:
        uid = _find(con, name)
        con.execute("UPDATE users SET active = ? WHERE user_id = ?", [bool(active), uid])
        return _plain(con.execute("SELECT user_id, name, role, created_at, active FROM users WHERE user_id = ?",
                                  [uid]).df().iloc[0].to_dict())


def list_users(store: Store) -> pd.DataFrame:
    """Users without their token hashes: ``user_id``, ``name``, ``role``, ``created_at``, ``active``."""
    return store.sql("SELECT user_id, name, role, created_at, active FROM users ORDER BY user_id")


def authenticate(store: Store, token: str | None) -> dict:
    """The active user holding ``token``; :class:`AuthenticationError` when there is none."""
    if not token:
        msg = "a token is required: send 'Authorization: Bearer <token>' (`civicgrid users add NAME --role ROLE`)"
        raise AuthenticationError(msg)
    got = store.sql("SELECT user_id, name, role, active FROM users WHERE token_hash = ?", [hash_token(token)])
    if got.empty:
        msg = "invalid or revoked token (a new token replaces the old one: `civicgrid users token NAME`)"
        raise AuthenticationError(msg)
    if not bool(got["active"].iloc[0]):
        name = got["name"].iloc[0]
        msg = f"user {name!r} is disabled; an admin issues a new token to re-enable it (`civicgrid users token {name}`)"
        raise AuthenticationError(msg)
    return _plain(got.iloc[0].to_dict())


def authorize(user: dict, role: str) -> dict:
    """Return ``user`` if its role is ``role`` or stronger, else raise :class:`PermissionDeniedError`."""
    need = check_role(role)
    if ROLE_RANK[user["role"]] < ROLE_RANK[need]:
        msg = f"user {user['name']!r} has role {user['role']}; this needs {need} or higher"
        raise PermissionDeniedError(msg)
    return user
