"""Cases for events imported without one: each event becomes a case with its audit trail, from the event's own
record (state, times, rework rounds), in bulk."""

from __future__ import annotations

import os
from datetime import datetime

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
from civicgrid.geo.staging import Staging, next_id
from civicgrid.geo.store import fetch_value, quote, writing
from civicgrid.geo.times import now_local
from civicgrid.sites.cases._memory import memory_cap
from civicgrid.sites.cases._sql import CASE_COLUMNS, UNIT_JOINS, UNIT_SQL, query_frame
from civicgrid.sites.cases.calendar import WorkCalendar, type_hours
from civicgrid.sites.cases.rebounds import find_rebounds

#: Events :func:`backfill` turns into cases per statement (bounds DuckDB's memory at any number of events).
BACKFILL_CHUNK = 1_000_000

#: SQL of an event ``e``'s closure and last rectification times, and of its rework rounds, as its case takes them.
_CLOSED = "coalesce(e.closed_at, CASE WHEN e.status = 'closed' THEN coalesce(e.rectified_at, e.time) END)"
_RECTIFIED = "coalesce(e.rectified_at, e.closed_at, CASE WHEN e.status = 'closed' THEN e.time END)"
_REWORKS = "greatest(coalesce(e.reopened, 0), 0)::INTEGER"


def backfill(con: duckdb.DuckDBPyConnection, *, actor: str = "import", event_ids=None,
             first_log_id: int | None = None) -> int:
    """Turn every event without a case into a case with an audit trail, from the event's own record.

    For use inside :func:`geo.store.writing` (the demo and imports call it). The state follows the event:
    ``closed`` when it has ``closed_at`` (or status closed), ``rectified`` when it has ``rectified_at``, else
    ``dispatched`` (to the automatic unit). The audit trail gets found, registered and dispatched at the
    event's time, ``reopened`` rework rounds (rectified → dispatched) spread evenly between the event's time
    and its last rectification (the source records no earlier times), the last rectification and the
    closure. The event's deadline is kept (computed on the working clock when missing) and its
    ``rebound_of`` link is kept; no rebound linking runs here (see :func:`link_rebounds`).
    Bulk SQL in chunks of :data:`BACKFILL_CHUNK` events in id order (audit rows are numbered by case, then
    step); returns the number of cases created. ``event_ids`` (an array) limits it to those events (an
    import's own), so its cost does not grow with the store. ``first_log_id``: the first audit row id to use
    (default: the next free one, above the ids an import in progress reserved).
    """
    with memory_cap(con):
        return _backfill(con, actor=actor, event_ids=event_ids, first_log_id=first_log_id)


def _backfill(con: duckdb.DuckDBPyConnection, *, actor: str, event_ids, first_log_id: int | None) -> int:
    if event_ids is not None:
        ids = np.asarray(event_ids, dtype=np.int64)
        if not ids.size:
            return 0
        con.register("_bf_only", pa.table({"event_id": ids}))
        only = (f"AND e.event_id IN (SELECT event_id FROM _bf_only) "
                f"AND e.event_id BETWEEN {int(ids.min())} AND {int(ids.max())}")
    else:
        only = ""
    try:
        todo = con.execute(f"""
            SELECT e.event_id, 3 + 2 * {_REWORKS} + ({_RECTIFIED} IS NOT NULL)::INTEGER
                                 + ({_CLOSED} IS NOT NULL)::INTEGER AS n_steps
            FROM events e WHERE NOT EXISTS (SELECT 1 FROM cases c WHERE c.event_id = e.event_id) {only}
        """).fetchnumpy()
    finally:
        if only:
            con.unregister("_bf_only")
    ids = np.asarray(todo["event_id"], dtype=np.int64)
    if not ids.size:
        return 0
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    steps = np.asarray(todo["n_steps"], dtype=np.int64)[order]
    del todo, order
    first_log = next_id(con, "case_log", "log_id") if first_log_id is None else int(first_log_id)
    log0 = first_log + np.cumsum(steps) - steps  # each case's first audit row id
    del steps
    hours = type_hours(query_frame(con, "SELECT code, deadline_value, deadline_unit FROM problem_types"))
    con.register("_bf_hours_df", pd.DataFrame({"code": hours.index.astype(str), "hours": hours.to_numpy(float)}))
    con.execute("CREATE OR REPLACE TEMP TABLE _bf_hours AS SELECT * FROM _bf_hours_df")
    con.unregister("_bf_hours_df")
    calendar = WorkCalendar.from_store(con)
    stamp = now_local()
    try:
        for i in range(0, ids.size, BACKFILL_CHUNK):
            _backfill_chunk(con, ids[i:i + BACKFILL_CHUNK], log0[i:i + BACKFILL_CHUNK], calendar=calendar,
                            stamp=stamp, actor=actor)
    finally:
        for name in ("_bf", "_bf_ids", "_bf_hours"):
            con.execute(f"DROP TABLE IF EXISTS {name}")
    return int(ids.size)


def _chunk_deadlines(con: duckdb.DuckDBPyConnection, ids: np.ndarray, *, lo: int, hi: int,
                     calendar: WorkCalendar) -> np.ndarray:
    """Deadlines of the events ``ids`` (sorted, in ``[lo, hi)``) that have none stored, on the working clock
    (NaT for the others)."""
    missing = con.execute("""
        SELECT e.event_id, e.time, h.hours FROM events e JOIN _bf_hours h ON h.code = e.problem_type
        WHERE e.event_id >= ? AND e.event_id < ? AND e.deadline IS NULL AND e.problem_type IS NOT NULL
    """, [lo, hi]).fetchnumpy()
    deadline = np.full(ids.size, np.datetime64("NaT"), dtype="M8[s]")
    at = np.searchsorted(ids, np.asarray(missing["event_id"], dtype=np.int64))
    mine = (at < ids.size) & (ids[np.minimum(at, ids.size - 1)] == missing["event_id"])
    deadline[at[mine]] = calendar.deadlines(np.asarray(missing["time"]).astype("M8[s]")[mine],
                                            np.asarray(missing["hours"], dtype="float64")[mine])
    return deadline


#: The cases of the chunk's events (temp table ``_bf``, with each case's state and number of audit rows).
_BF_SQL = f"""
    CREATE OR REPLACE TEMP TABLE _bf AS
    SELECT *, CASE WHEN closed_at IS NOT NULL THEN 'closed'
                   WHEN rectified_at IS NOT NULL THEN 'rectified' ELSE 'dispatched' END AS state,
              3 + 2 * reworks + (rectified_at IS NOT NULL)::INTEGER
                + (closed_at IS NOT NULL)::INTEGER AS n_steps
    FROM (
        SELECT e.event_id AS case_id, e.event_id, e.source, e.problem_type, e.site_id, s.category_code,
               e.grid_code, e.community_code, e.street_code, e.district_code,
               e.time AS found_at, coalesce(e.deadline, k.deadline) AS deadline, {UNIT_SQL},
               {_CLOSED} AS closed_at, {_RECTIFIED} AS rectified_at, {_REWORKS} AS reworks,
               e.rebound_of, k.log0
        FROM _bf_ids k JOIN events e ON e.event_id = k.event_id {UNIT_JOINS}
        WHERE e.event_id >= ? AND e.event_id < ?
    )
"""
#: The chunk's cases into ``cases``.
_BF_CASES_SQL = f"""
    INSERT INTO cases ({CASE_COLUMNS})
    SELECT case_id, event_id, source, problem_type, site_id, category_code, grid_code,
           community_code, street_code, district_code, state, found_at, deadline, unit, unit_code,
           found_at, rectified_at, closed_at, reworks, rebound_of, NULL, ?::TIMESTAMP
    FROM _bf
"""
#: The audit trail of the chunk's cases. Steps of a case with r reworks: 0 found, 1 registered, 2 dispatched;
#: 3 .. 2 + 2r the rework rounds (the k-th of r rectified at t + span*(2k-1)/(2r+1), sent back at
#: t + span*2k/(2r+1)); 3 + 2r rectified; 4 + 2r closed. A case's rows are numbered from its log0 on.
_LOG_ROWS_SQL = """
    SELECT log0 + step AS log_id, case_id,
           CASE WHEN step < 3 THEN found_at
                WHEN step < 3 + 2 * reworks THEN found_at + to_microseconds(
                    greatest(epoch_us(coalesce(rectified_at, deadline, found_at)) - epoch_us(found_at), 0)
                    * (step - 2) // (2 * reworks + 1) // 1000000 * 1000000)
                WHEN step = 3 + 2 * reworks THEN rectified_at ELSE closed_at END AS changed_at,
           ?::VARCHAR AS actor,
           CASE WHEN step = 0 THEN NULL WHEN step = 1 THEN 'found' WHEN step = 2 THEN 'registered'
                WHEN step < 3 + 2 * reworks
                    THEN CASE WHEN (step - 3) % 2 = 0 THEN 'dispatched' ELSE 'rectified' END
                WHEN step = 3 + 2 * reworks THEN 'dispatched' ELSE 'rectified' END AS from_state,
           CASE WHEN step = 0 THEN 'found' WHEN step = 1 THEN 'registered' WHEN step = 2 THEN 'dispatched'
                WHEN step < 3 + 2 * reworks
                    THEN CASE WHEN (step - 3) % 2 = 0 THEN 'rectified' ELSE 'dispatched' END
                WHEN step = 3 + 2 * reworks THEN 'rectified' ELSE 'closed' END AS to_state,
           NULL AS note,
           CASE WHEN step = 2 OR (step < 3 + 2 * reworks AND (step - 3) % 2 = 1) THEN unit END AS unit,
           NULL AS photo
    FROM (SELECT case_id, found_at, deadline, rectified_at, closed_at, reworks, unit, log0,
                 unnest(range(n_steps::BIGINT)) AS step FROM {source})
"""
_BF_LOG_SQL = "INSERT INTO case_log " + _LOG_ROWS_SQL.replace("{source}", "_bf")
#: The event carries its case's state (only rows that differ are written).
_BF_SYNC_SQL = """
    UPDATE events SET status = CASE WHEN b.state = 'closed' THEN 'closed' ELSE 'open' END,
           deadline = b.deadline, rectified_at = b.rectified_at, closed_at = b.closed_at,
           reopened = b.reworks, rebound_of = b.rebound_of
    FROM _bf b WHERE events.event_id = b.event_id AND events.event_id >= ? AND events.event_id < ?
      AND (events.status IS DISTINCT FROM CASE WHEN b.state = 'closed' THEN 'closed' ELSE 'open' END
           OR events.deadline IS DISTINCT FROM b.deadline
           OR events.rectified_at IS DISTINCT FROM b.rectified_at
           OR events.closed_at IS DISTINCT FROM b.closed_at
           OR events.reopened IS DISTINCT FROM b.reworks
           OR events.rebound_of IS DISTINCT FROM b.rebound_of)
"""


def _backfill_chunk(con: duckdb.DuckDBPyConnection, ids: np.ndarray, log0: np.ndarray, *, calendar: WorkCalendar,
                    stamp: datetime, actor: str) -> None:
    """Cases and audit trails of the events ``ids`` (sorted), their audit rows numbered from ``log0`` on."""
    lo, hi = int(ids[0]), int(ids[-1]) + 1  # the id range lets DuckDB skip the rest
    deadline = _chunk_deadlines(con, ids, lo=lo, hi=hi, calendar=calendar)
    con.register("_bf_ids_df", pd.DataFrame({"event_id": ids, "log0": log0, "deadline": deadline}))
    con.execute("CREATE OR REPLACE TEMP TABLE _bf_ids AS SELECT * FROM _bf_ids_df")
    con.unregister("_bf_ids_df")
    con.execute(_BF_SQL, [lo, hi])
    con.execute(_BF_CASES_SQL, [stamp])
    con.execute(_BF_LOG_SQL, [actor])
    con.execute(_BF_SYNC_SQL, [lo, hi])


def backfill_db(db: str | os.PathLike, *, actor: str = "import") -> int:
    """:func:`backfill` as one atomic write on the database file ``db``."""
    with writing(db) as con:
        made = backfill(con, actor=actor)
        con.execute("DELETE FROM meta WHERE key = 'cases_pending'")  # see sites.events.import_events
        return made


class ImportCases:
    """The cases, audit trails and rebound links of an import's new events, made as the import stages them and
    staged beside them before it is published, without holding the writers' lock. The result is that of
    :func:`backfill` then :func:`~civicgrid.sites.cases.rebounds.link_rebounds` on the new events once
    published (``tests/test_import_cases.py`` compares them), made set-wise from the staged files:

    1. each batch gets its events' deadlines on the working clock as it is staged (:meth:`with_deadlines`);
    2. :meth:`finish`: the rebound links of the new cases, searched among the store's closed cases and the
       new closed ones (:func:`~civicgrid.sites.cases.rebounds.find_rebounds`); then per staged file of
       events, one query each writes the events with their case's state and link, their cases, and their
       audit rows (numbered in ids reserved for them) as the files to publish.

    Nothing is copied into tables, updated in place or written twice but the events themselves (once more
    with their links).
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, *, actor: str = "import") -> None:
        self.actor = actor
        self.hours = type_hours(query_frame(con, "SELECT code, deadline_value, deadline_unit FROM problem_types"))
        self.calendar = WorkCalendar.from_store(con)

    def with_deadlines(self, data: pa.Table) -> pa.Table:
        """``data`` (a batch of new events: ``time``, ``problem_type``) with each event's deadline, on the
        working clock from its time and its type's hours to rectify (none without a type)."""
        codes = data.column("problem_type").to_pandas()
        hours = codes.astype(object).map(self.hours).to_numpy(dtype="float64")
        found = data.column("time").to_numpy().astype("M8[s]")
        deadline = self.calendar.deadlines(found, hours)
        column = pa.array(deadline, pa.timestamp("s"), mask=np.isnat(deadline))
        if "deadline" in data.column_names:
            return data.set_column(data.column_names.index("deadline"), "deadline", column)
        return data.append_column("deadline", column)

    def finish(self, staging: Staging) -> tuple[int, int]:
        """Stage the cases, audit rows and links of the events staged; return (cases made, rebounds linked)."""
        files = list(staging.files.get("events") or [])
        if not files:
            return 0, 0
        staging.wait()
        self.stamp = now_local()  # the cases' updated_at: when they are made, as backfill stamps them
        cur = staging.scratch()
        try:
            with memory_cap(cur):
                return self._finish(staging, cur, files)
        finally:
            cur.execute("DROP TABLE IF EXISTS _import_links")
            cur.close()

    def _finish(self, staging: Staging, cur: duckdb.DuckDBPyConnection, files: list) -> tuple[int, int]:
        types = staging.columns("events")
        have = {r[0] for r in cur.execute(f"DESCRIBE SELECT * FROM read_parquet({quote(str(files[0]))})")
                .fetchall()}

        def state(paths: list) -> str:  # the staged events with their case's state (as backfill syncs them)
            cols = ", ".join(c if c in have else f"NULL::{t} AS {c}" for c, t in types.items())
            listed = ", ".join(quote(str(f)) for f in paths)
            return f"""
                SELECT * REPLACE (CASE WHEN {_CLOSED} IS NOT NULL THEN 'closed' ELSE 'open' END AS status,
                                  {_RECTIFIED} AS rectified_at, {_CLOSED} AS closed_at, {_REWORKS} AS reopened)
                FROM (SELECT {cols} FROM read_parquet([{listed}])) e"""

        everything = state(files)
        case_id, old_id = find_rebounds(
            cur, new=f"SELECT event_id AS case_id, problem_type, site_id, epoch_us(time) AS found_us, lat, lng "
                     f"FROM ({everything})",
            old=f"""
                SELECT c.case_id, c.problem_type, c.site_id, epoch_us(c.closed_at) AS closed_us, e.lat, e.lng
                FROM cases c JOIN events e ON e.event_id = c.event_id
                WHERE c.state = 'closed' AND c.closed_at IS NOT NULL
                  AND c.problem_type IN (SELECT problem_type FROM _reb_types)
                  AND epoch_us(c.closed_at) >= (SELECT min(lo) FROM _reb_types)
                  AND epoch_us(c.closed_at) < (SELECT max(hi) FROM _reb_types)
                UNION ALL
                SELECT event_id, problem_type, site_id, epoch_us(closed_at), lat, lng FROM ({everything})
                WHERE closed_at IS NOT NULL""")
        cur.register("_import_links_df", pa.table({"case_id": case_id, "old_id": old_id}))
        cur.execute("CREATE OR REPLACE TEMP TABLE _import_links AS SELECT * FROM _import_links_df "
                    "ORDER BY case_id")
        cur.unregister("_import_links_df")
        made, case_files, steps = 0, [], []
        for path in files:  # in id order: the audit rows are numbered by case, as backfill numbers them
            lo, hi = cur.execute(f"SELECT min(event_id), max(event_id) FROM read_parquet({quote(str(path))})"
                                 ).fetchone()
            # the file's links only (a join with all of them built their hash table again for every file)
            n = staging.stage_query("events", cur, f"""
                SELECT e.* REPLACE (coalesce(e.rebound_of, l.old_id) AS rebound_of)
                FROM ({state([path])}) e
                LEFT JOIN (SELECT * FROM _import_links WHERE case_id BETWEEN $lo AND $hi) l
                       ON l.case_id = e.event_id""", {"lo": lo, "hi": hi})
            staging.unstage("events", [path], rows=n)
            if not n:
                continue
            made += n
            staging.stage_query("cases", cur, _IMPORT_CASES_SQL.format(
                source=quote(str(staging.files["events"][-1]))), [self.stamp])
            case_files.append(staging.files["cases"][-1])
            steps.append(int(fetch_value(cur, f"SELECT sum({_STEPS}) FROM read_parquet({quote(str(case_files[-1]))})")))
        total = sum(steps)
        first = staging.reserve("case_log", "log_id", total) if total else 1
        offset = np.cumsum([0, *steps[:-1]]) + first
        for path, off in zip(case_files, offset, strict=True):
            staging.stage_query("case_log", cur, _LOG_ROWS_SQL.replace("{source}", f"""(
                SELECT *, {int(off)} + sum(n_steps) OVER (ORDER BY case_id) - n_steps AS log0
                FROM (SELECT *, {_STEPS} AS n_steps FROM read_parquet({quote(str(path))})))"""), [self.actor])
        return made, int(case_id.size)


#: The number of audit rows of a case ``reworks``, ``rectified_at``, ``closed_at``.
_STEPS = "(3 + 2 * reworks + (rectified_at IS NOT NULL)::INTEGER + (closed_at IS NOT NULL)::INTEGER)::BIGINT"
#: The cases of a file of staged events ``{source}`` that carry their case's state (as :data:`_BF_SQL` makes them).
_IMPORT_CASES_SQL = f"""
    SELECT e.event_id AS case_id, e.event_id, e.source, e.problem_type, e.site_id, s.category_code, e.grid_code,
           e.community_code, e.street_code, e.district_code,
           CASE WHEN e.closed_at IS NOT NULL THEN 'closed'
                WHEN e.rectified_at IS NOT NULL THEN 'rectified' ELSE 'dispatched' END AS state,
           e.time AS found_at, e.deadline, {UNIT_SQL}, e.time AS dispatched_at, e.rectified_at, e.closed_at,
           e.reopened AS reworks, e.rebound_of, NULL AS photo, ?::TIMESTAMP AS updated_at
    FROM read_parquet({{source}}) e {UNIT_JOINS}
"""
