"""Users, roles and API tokens: tokens are random, shown once, and stored only as a SHA-256 hash.

Field links (issue 15): a phone cannot send an ``Authorization`` header, so each inspector's link to the field
page of a patrol plan carries a **field key**, an HMAC-SHA256 of (plan id, inspector, plan day) under a secret kept
in the store's ``meta`` table (:func:`field_secret`, created on first use). A key opens that plan's page for that
inspector only, until the end of the plan's day (:func:`check_field_key`); nothing per link is stored, so the
plan's exports can list the links at any time. Changing the secret (:func:`new_field_secret`) revokes every link.
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import hmac
import os
import secrets
from datetime import date, datetime, timedelta

import duckdb
import pandas as pd
from civicgrid.geo.caches import VersionCache, cached_read
from civicgrid.geo.errors import (
    AuthenticationError,
    ConflictError,
    InvalidParameterError,
    NotFoundError,
    PermissionDeniedError,
)
from civicgrid.geo.store import Store, fetch_value, retry_writes, set_meta, writing
from civicgrid.geo.times import store_now

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
        now = store_now(con)
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


#: Token lookups kept per store version (a token's user, or None for an unknown token).
_TOKENS = VersionCache(1024)


def _users_by_token(con: duckdb.DuckDBPyConnection) -> dict[str, dict]:
    """Every user by the hash of its token (an office has tens to hundreds of users)."""
    got = con.execute("SELECT token_hash, user_id, name, role, active FROM users WHERE token_hash IS NOT NULL").df()
    return {str(r.pop("token_hash")): _plain(r) for r in got.to_dict("records")}


def authenticate(store: Store, token: str | None) -> dict:
    """The active user holding ``token``; :class:`AuthenticationError` when there is none."""
    if not token:
        msg = "a token is required: send 'Authorization: Bearer <token>' (`civicgrid users add NAME --role ROLE`)"
        raise AuthenticationError(msg)
    digest = hash_token(token)

    def lookup() -> dict | None:
        if store.at is not None:  # a view of the past: its users as they were
            got = store.sql("SELECT user_id, name, role, active FROM users WHERE token_hash = ?", [digest])
            return None if got.empty else _plain(got.iloc[0].to_dict())
        with store.reading() as cur:
            return cached_read(cur, "users-by-token", ("users",), _users_by_token).get(digest)

    # kept per token and store version (no lake query while the store is unchanged); a new version (every case
    # write is one) reads the users again only when a write changed them since (a new token, a revoked one, a
    # disabled user: geo.caches.cached_read), so the next request after such a write sees it
    user = _TOKENS.get(store, ("token", digest), lookup)
    if user is None:
        msg = "invalid or revoked token (a new token replaces the old one: `civicgrid users token NAME`)"
        raise AuthenticationError(msg)
    if not bool(user["active"]):
        name = user["name"]
        msg = f"user {name!r} is disabled; an admin issues a new token to re-enable it (`civicgrid users token {name}`)"
        raise AuthenticationError(msg)
    return dict(user)


def authorize(user: dict, role: str) -> dict:
    """Return ``user`` if its role is ``role`` or stronger, else raise :class:`PermissionDeniedError`."""
    need = check_role(role)
    if ROLE_RANK[user["role"]] < ROLE_RANK[need]:
        msg = f"user {user['name']!r} has role {user['role']}; this needs {need} or higher"
        raise PermissionDeniedError(msg)
    return user


# --- field links --------------------------------------------------------------------------------------------

#: ``meta`` key of the secret that signs the field links.
FIELD_SECRET_META = "field_link_secret"
#: Bytes of the HMAC kept in a field key (120 bits: 20 URL-safe characters, a small QR code).
FIELD_KEY_BYTES = 15


@retry_writes
def new_field_secret(db: str | os.PathLike) -> None:
    """Replace the secret of the field links: every link given out so far stops working."""
    with writing(db) as con:
        set_meta(con, FIELD_SECRET_META, secrets.token_hex(32))


@retry_writes
def field_secret(db: str | os.PathLike | Store) -> bytes:
    """The secret signing the field links of the store ``db`` (a store or its path), created on first use."""
    if isinstance(db, Store):
        value = db.meta(FIELD_SECRET_META)
        if value:
            return bytes.fromhex(value)
        db = db.path
    with writing(db) as con:
        row = con.execute("SELECT value FROM meta WHERE key = ?", [FIELD_SECRET_META]).fetchone()
        if row is None or not row[0]:
            value = secrets.token_hex(32)
            set_meta(con, FIELD_SECRET_META, value)
        else:
            value = row[0]
    return bytes.fromhex(value)


def field_key(secret: bytes, *, plan_id: str, inspector: str, day: date) -> str:
    """The key of one inspector's field link to one plan, valid on the plan's ``day`` (URL-safe text)."""
    message = f"civicgrid-field\n{plan_id}\n{inspector}\n{day.isoformat()}".encode()
    digest = hmac.new(secret, message, hashlib.sha256).digest()[:FIELD_KEY_BYTES]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def check_field_key(secret: bytes, key: str | None, *, plan_id: str, inspector: str, day: date,
                    now: datetime) -> None:
    """Refuse (:class:`AuthenticationError`, HTTP 401) a field key that is not the key of ``inspector``'s link to
    the plan ``plan_id`` of ``day``, or that is used after the end of that day (``now``: local time of the store).
    """
    if not key:
        msg = "this page needs the key of your field link (?key=...): the planner's exports list each inspector's link"
        raise AuthenticationError(msg)
    want = field_key(secret, plan_id=plan_id, inspector=inspector, day=day)
    if not hmac.compare_digest(want.encode(), str(key).strip().encode()):
        msg = (f"the key does not open plan {plan_id} for inspector {inspector!r}: a field link works only for its "
               "own plan and inspector (ask the planner for yours)")
        raise AuthenticationError(msg)
    end = datetime(day.year, day.month, day.day) + timedelta(days=1)
    if now >= end:
        msg = (f"this field link expired at the end of the plan's day ({day.isoformat()} 24:00); "
               "today's plan has a new link")
        raise AuthenticationError(msg)
