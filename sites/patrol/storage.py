"""Stored patrol plans: one row per plan in the store's ``patrol_plans`` table, the whole document as JSON."""

from __future__ import annotations

import json
import os
import uuid

import pandas as pd
from civicgrid.geo.errors import NotFoundError
from civicgrid.geo.schema import MIGRATIONS
from civicgrid.geo.store import Store, retry_writes, writing
from civicgrid.geo.times import store_now

#: Schema version that added the ``patrol_plans`` table.
_PLANS_VERSION = 4

_HAS_PLANS_SQL = """
SELECT count(*) AS n FROM information_schema.tables
WHERE table_name = 'patrol_plans' AND table_catalog = current_database()
"""


@retry_writes
def save_plan(db: str | os.PathLike | Store, doc: dict) -> str:
    """Store a plan document in the database (one atomic write) and return its new ``plan_id``.

    Parameters
    ----------
    db
        Database file path (or a :class:`geo.store.Store`).
    doc
        A document of :func:`plan_day`; its ``plan_id`` is set.
    """
    path = getattr(db, "path", db)
    plan_id = uuid.uuid4().hex[:12]
    doc["plan_id"] = plan_id
    created = pd.Timestamp(doc.get("created_at") or store_now(path)).to_pydatetime()
    with writing(path) as con:
        for statement in MIGRATIONS[_PLANS_VERSION]:   # a file already at version 4 from before the table existed
            con.execute(statement)
        con.execute("INSERT INTO patrol_plans VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [plan_id, created, doc.get("date"), doc.get("solver"), doc.get("travel_source"),
                     doc["totals"]["inspectors"], doc["totals"]["stops"], doc["totals"]["risk"],
                     json.dumps(doc.get("params", {}), ensure_ascii=False), json.dumps(doc, ensure_ascii=False)])
    return plan_id


def load_plan(store: Store, plan_id: str) -> dict:
    """A stored plan document by id; :class:`~geo.errors.NotFoundError` naming the latest ids otherwise."""
    has = _has_plans(store)
    row = store.sql("SELECT plan_json FROM patrol_plans WHERE plan_id = ?", [str(plan_id)]) if has else None
    if row is None or row.empty:
        latest = list_plans(store, limit=5)["plan_id"].tolist() if has else []
        msg = f"no patrol plan {plan_id!r}; latest: {', '.join(latest) if latest else 'none stored'}"
        raise NotFoundError(msg)
    return json.loads(row["plan_json"].iloc[0])


def list_plans(store: Store, *, limit: int = 50) -> pd.DataFrame:
    """Stored plans, newest first: ``plan_id, created_at, plan_date, solver, travel_source, inspectors, stops,
    total_risk``."""
    has = _has_plans(store)
    cols = "plan_id, created_at, plan_date, solver, travel_source, inspectors, stops, total_risk"
    if not has:
        return pd.DataFrame(columns=cols.split(", "))
    return store.sql(f"SELECT {cols} FROM patrol_plans ORDER BY created_at DESC, plan_id LIMIT ?", [int(limit)])


def _has_plans(store: Store) -> bool:
    """Whether the store has the ``patrol_plans`` table (a file from before version 4 may not)."""
    return bool(store.sql(_HAS_PLANS_SQL)["n"].iloc[0])
