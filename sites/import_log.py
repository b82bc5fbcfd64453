"""The imports a store has seen, and undoing one: what an events import loaded (and the cases it created, when
nobody has moved them since) is removed, leaving the store as if the import had never run."""

from __future__ import annotations

import json
import os

import duckdb
import pandas as pd
from civicgrid.geo.errors import ConflictError, InvalidParameterError, NotFoundError
from civicgrid.geo.store import Store, writing
from civicgrid.geo.times import store_now

#: The actor of the audit rows an import writes (:func:`civicgrid.sites.cases.backfill`).
IMPORT_ACTOR = "import"
#: The layers whose imports can be undone (their rows carry ``import_id``).
UNDO_LAYERS = ("events", "sites", "inspections", "roads")


def list_imports(store: Store) -> pd.DataFrame:
    """Every import: id, layer, file, when, counts (rows read, loaded, updated, duplicates, rejected) and when it
    was undone (NaT when it was not). Times are the store's wall-clock time (:func:`~civicgrid.geo.times.
    now_local` in its zone), started, finished and undone alike."""
    df = store.sql("SELECT import_id, layer, file, started_at, finished_at, rows_read, loaded, duplicates, rejected, "
                   "report_json FROM imports ORDER BY import_id")
    reports = [json.loads(r) if isinstance(r, str) and r else {} for r in df.pop("report_json")]
    df.insert(7, "updated", [int(r.get("updated") or 0) for r in reports])
    df["undone_at"] = pd.to_datetime([r.get("undone_at") for r in reports])
    return df


def undo_import(db: str | os.PathLike, import_id: int) -> dict:
    """Remove what import ``import_id`` loaded, in one transaction.

    Events: the events it loaded, their cases and audit trails, and the rebound links to them. Sites and
    inspections: the rows it loaded, when nothing refers to them.

    Raises
    ------
    NotFoundError
        No such import.
    InvalidParameterError
        An import of another layer (areas and micro-grids are replaced by importing them again), or one
        already undone.
    ConflictError
        Cases of its events were moved since (by a user, not the import): nothing is removed; the message names
        them. Also an import that updated stored rows (``--update``): re-import the earlier file with
        ``--update`` instead.

    Returns
    -------
    dict
        ``import_id``, ``layer``, the rows removed (``events``, ``cases``, ``sites``, ``inspections``) and
        ``undone_at`` (ISO text, the store's wall-clock time like ``finished_at``).
    """
    with writing(db) as con:
        row = con.execute("SELECT layer, report_json FROM imports WHERE import_id = ?", [int(import_id)]).fetchone()
        if row is None:
            msg = f"no import {import_id} (civicgrid imports list shows them)"
            raise NotFoundError(msg)
        layer, report_json = row
        report = json.loads(report_json) if report_json else {}
        if layer not in UNDO_LAYERS:
            msg = f"import {import_id} loaded {layer}, which cannot be undone (import the right file again)"
            raise InvalidParameterError(msg)
        if report.get("undone_at"):
            msg = f"import {import_id} was undone already, at {report['undone_at']}"
            raise InvalidParameterError(msg)
        if report.get("updated"):
            msg = (f"import {import_id} updated {report['updated']} stored rows, which undo cannot restore; import "
                   "the earlier file again with --update")
            raise ConflictError(msg)
        done = {"import_id": int(import_id), "layer": layer, "events": 0, "cases": 0, "sites": 0, "inspections": 0,
                "roads": 0}
        if layer == "events":
            done.update(_undo_events(con, int(import_id)))
        elif layer == "roads":  # nothing refers to a road: events placed by it keep their point
            done["roads"] = int(fetch(con, "SELECT count(*) FROM roads WHERE import_id = ?", import_id))
            con.execute("DELETE FROM roads WHERE import_id = ?", [int(import_id)])
            con.execute("DELETE FROM road_numbers WHERE import_id = ?", [int(import_id)])
        else:
            done[layer] = _undo_rows(con, layer, int(import_id))
        report["undone_at"] = done["undone_at"] = store_now(con).isoformat()  # as finished_at
        con.execute("UPDATE imports SET report_json = ? WHERE import_id = ?",
                    [json.dumps(report, ensure_ascii=False), int(import_id)])
    return done


def fetch(con: duckdb.DuckDBPyConnection, query: str, *params: object) -> object:
    """The first value of ``query``."""
    return con.execute(query, list(params)).fetchone()[0]


def _undo_events(con: duckdb.DuckDBPyConnection, import_id: int) -> dict:
    con.execute("CREATE OR REPLACE TEMP TABLE _undo_ev AS SELECT event_id FROM events WHERE import_id = ?",
                [import_id])
    con.execute("CREATE OR REPLACE TEMP TABLE _undo_cases AS SELECT case_id FROM cases "
                "WHERE event_id IN (SELECT event_id FROM _undo_ev)")
    try:
        moved = con.execute(f"""
            SELECT DISTINCT case_id FROM case_log
            WHERE case_id IN (SELECT case_id FROM _undo_cases) AND actor <> '{IMPORT_ACTOR}' ORDER BY case_id
        """).fetchall()
        if moved:
            ids = [str(r[0]) for r in moved]
            msg = (f"import {import_id} cannot be undone: {len(ids)} of its cases were moved since "
                   f"({', '.join(ids[:10])}{' …' if len(ids) > 10 else ''}); nothing was removed")
            raise ConflictError(msg)
        n_events = con.execute("SELECT count(*) FROM _undo_ev").fetchone()[0]
        n_cases = con.execute("SELECT count(*) FROM _undo_cases").fetchone()[0]
        con.execute("DELETE FROM case_log WHERE case_id IN (SELECT case_id FROM _undo_cases)")
        con.execute("DELETE FROM cases WHERE case_id IN (SELECT case_id FROM _undo_cases)")
        con.execute("DELETE FROM events WHERE import_id = ?", [import_id])
        con.execute("UPDATE cases SET rebound_of = NULL WHERE rebound_of IN (SELECT case_id FROM _undo_cases)")
        con.execute("UPDATE events SET rebound_of = NULL WHERE rebound_of IN (SELECT case_id FROM _undo_cases)")
    finally:
        con.execute("DROP TABLE IF EXISTS _undo_ev")
        con.execute("DROP TABLE IF EXISTS _undo_cases")
    return {"events": int(n_events), "cases": int(n_cases)}


def _undo_rows(con: duckdb.DuckDBPyConnection, layer: str, import_id: int) -> int:
    key = {"sites": "site_id", "inspections": "inspection_id"}[layer]
    refs = [("events", key)] + ([("inspections", "site_id"), ("cases", "site_id")] if layer == "sites" else [])
    for table, col in refs:
        n = con.execute(f"SELECT count(*) FROM {table} WHERE {col} IN "
                        f"(SELECT {key} FROM {layer} WHERE import_id = ?)", [import_id]).fetchone()[0]
        if n:
            msg = (f"import {import_id} cannot be undone: {n} {table} refer to the {layer} it loaded; nothing was "
                   "removed")
            raise ConflictError(msg)
    n = con.execute(f"SELECT count(*) FROM {layer} WHERE import_id = ?", [import_id]).fetchone()[0]
    con.execute(f"DELETE FROM {layer} WHERE import_id = ?", [import_id])
    return int(n)
