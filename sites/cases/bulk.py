"""Cases for events imported without one: each event becomes a case with its audit trail, from the event's own
record (state, times, rework rounds), in bulk."""

from __future__ import annotations

import os
import queue
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from civicgrid.geo.staging import Staging, next_id
from civicgrid.geo.store import writing
from civicgrid.geo.times import store_now
from civicgrid.sites.cases._arrays import codes, dictionary, lookup
from civicgrid.sites.cases._memory import memory_cap
from civicgrid.sites.cases._sql import (
    CASE_COLUMNS,
    query_frame,
)
from civicgrid.sites.cases.calendar import WorkCalendar, type_hours
from civicgrid.sites.cases.rebounds import LABEL_KIND, find_rebounds, kind_codes
from civicgrid.sites.cases.units import DispatchUnits

#: Events :func:`backfill` turns into cases per statement (bounds DuckDB's memory at any number of events).
BACKFILL_CHUNK = 1_000_000

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

    The rule is the one an import stages its cases by (:meth:`ImportCases.with_case_state`, :class:`DispatchUnits`,
    :func:`_log_rows`), run on the events read by Arrow in chunks of :data:`BACKFILL_CHUNK` events in id
    order (audit rows are numbered by case, then step), the rows inserted from Arrow; returns the number of
    cases created. ``event_ids`` (an array) limits it to those events (an import's own), so its cost does not
    grow with the store. ``first_log_id``: the first audit row id to use (default: the next free one, above
    the ids an import in progress reserved).
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
            SELECT e.event_id FROM events e
            WHERE NOT EXISTS (SELECT 1 FROM cases c WHERE c.event_id = e.event_id) {only}
        """).fetchnumpy()
    finally:
        if only:
            con.unregister("_bf_only")
    ids = np.sort(np.asarray(todo["event_id"], dtype=np.int64), kind="stable")
    del todo
    if not ids.size:
        return 0
    first_log = next_id(con, "case_log", "log_id") if first_log_id is None else int(first_log_id)
    maker = ImportCases(con, actor=actor)
    maker.stamp = store_now(con)
    units = DispatchUnits.read(con)
    for i in range(0, ids.size, BACKFILL_CHUNK):
        first_log = _backfill_chunk(con, ids[i:i + BACKFILL_CHUNK], first_log, maker=maker, units=units)
    return int(ids.size)


#: The columns of ``events`` a case is made from.
_BF_EVENT_COLUMNS = ("event_id", "source", "problem_type", "site_id", "grid_code", "community_code", "street_code",
                     "district_code", "time", "deadline", "status", "rectified_at", "closed_at", "reopened",
                     "rebound_of")
#: The columns of ``events`` that carry their case's state (written back where they differ).
_BF_SYNCED = ("status", "deadline", "rectified_at", "closed_at", "reopened", "rebound_of")
#: The chunk's events (``_bf_ids``: their ids, in the id range given), in id order.
_BF_READ_SQL = f"""
    SELECT {", ".join(f"e.{c}" for c in _BF_EVENT_COLUMNS)} FROM events e
    WHERE e.event_id >= ? AND e.event_id < ? AND e.event_id IN (SELECT event_id FROM _bf_ids)
    ORDER BY e.event_id"""
#: The chunk's events carry their cases' state (``_bf_events``; only rows that differ are written).
_BF_SYNC_SQL = f"""
    UPDATE events SET {", ".join(f"{c} = b.{c}" for c in _BF_SYNCED)}
    FROM _bf_events b WHERE events.event_id = b.event_id AND events.event_id >= ? AND events.event_id < ?
      AND ({" OR ".join(f"events.{c} IS DISTINCT FROM b.{c}" for c in _BF_SYNCED)})"""
#: The columns of ``case_log``, as :func:`_log_rows` makes them.
_LOG_COLUMNS = "log_id, case_id, changed_at, actor, from_state, to_state, note, unit, photo"


def _backfill_chunk(con: duckdb.DuckDBPyConnection, ids: np.ndarray, first_log: int, *, maker: ImportCases,
                    units: DispatchUnits) -> int:
    """Cases and audit trails of the events ``ids`` (sorted), their audit rows numbered from ``first_log`` on;
    return the next free audit row id."""
    lo, hi = int(ids[0]), int(ids[-1]) + 1  # the id range lets DuckDB skip the rest
    con.register("_bf_ids", pa.table({"event_id": ids}))
    try:
        data = con.execute(_BF_READ_SQL, [lo, hi]).to_arrow_table()
    finally:
        con.unregister("_bf_ids")
    data = maker.with_case_state(data)
    steps = _n_steps(data)
    cases = maker._cases(data, units)
    log = _log_rows(data, cases.column("unit"), first_log + np.cumsum(steps) - steps, actor=maker.actor)
    rows = {"_bf_cases": cases, "_bf_log": log, "_bf_events": data.select(["event_id", *_BF_SYNCED])}
    for name, table in rows.items():
        con.register(name, table)
    try:
        con.execute(f"INSERT INTO cases ({CASE_COLUMNS}) SELECT {CASE_COLUMNS} FROM _bf_cases")
        con.execute(f"INSERT INTO case_log ({_LOG_COLUMNS}) SELECT {_LOG_COLUMNS} FROM _bf_log")
        con.execute(_BF_SYNC_SQL, [lo, hi])
    finally:
        for name in rows:
            con.unregister(name)
    return first_log + int(steps.sum())


def backfill_db(db: str | os.PathLike, *, actor: str = "import") -> int:
    """:func:`backfill` as one atomic write on the database file ``db``."""
    with writing(db) as con:
        made = backfill(con, actor=actor)
        con.execute("DELETE FROM meta WHERE key = 'cases_pending'")  # see sites.events.import_events
        return made


#: The states an imported case takes (the dictionary of its ``state``), and those of its audit rows.
_CASE_STATES = ["dispatched", "rectified", "closed"]
_LOG_STATES = ["found", "registered", "dispatched", "rectified", "closed"]


class ImportCases:
    """The cases, audit trails and rebound links of an import's new events, made as the import stages them and
    staged beside them before it is published, without holding the writers' lock. The result is that of
    :func:`backfill` then :func:`~civicgrid.sites.cases.rebounds.link_rebounds` on the new events once
    published (``tests/test_import_cases.py`` compares them):

    1. each batch is staged with its events as their cases will have them (:meth:`with_case_state`: deadline,
       status, rectification and closure times, rework rounds), all of which depend on the event alone;
    2. :meth:`finish`: the rebound links of the new cases, searched among the store's closed cases and the
       new closed ones (:func:`~civicgrid.sites.cases.rebounds.find_rebounds`); then, on the threads the
       import gives it (:func:`civicgrid.sites.events.finish_threads`), each staged file of events is read once
       by Arrow and written again with its links, beside its cases and their audit rows (numbered in ids
       reserved for them), all three computed from the file's columns (numpy and Arrow: :class:`DispatchUnits`,
       :func:`_log_rows`) and written by Arrow.

    Nothing is copied into tables, updated in place or written twice but the events themselves (once more
    with their links).
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, *, actor: str = "import") -> None:
        self.actor = actor
        self.hours = type_hours(query_frame(con, "SELECT code, deadline_value, deadline_unit FROM problem_types"))
        self.calendar = WorkCalendar.from_store(con)

    def with_case_state(self, data: pa.Table) -> pa.Table:
        """``data`` (events without a case: ``time``, ``problem_type``, and ``deadline``, ``status``,
        ``rectified_at``, ``closed_at``, ``reopened`` when it has them) as their cases leave them, the one home of
        that rule (an import stages its batches so; :func:`backfill` writes stored events so): the event's
        deadline, else one on the working clock from its time and its type's hours to rectify (none without a
        type); closed (status ``closed``) at its closure time, else when its status says closed at its
        rectification, else at its time; rectified at its rectification time, else its closure time, else its
        time when closed; ``reopened`` rework rounds, at least 0. Only the rebound link is left (to
        :meth:`finish` in an import)."""
        codes = data.column("problem_type").to_pandas()
        hours = codes.astype(object).map(self.hours).to_numpy(dtype="float64")
        found = data.column("time").to_numpy().astype("M8[s]")
        deadline = self.calendar.deadlines(found, hours)
        computed = pa.array(deadline, pa.timestamp("s"), mask=np.isnat(deadline))
        if "deadline" in data.column_names:  # a stored event's own deadline is kept (no import file sets one)
            own = data.column("deadline")
            computed = pc.coalesce(own, computed.cast(own.type))
        data = _put(data, "deadline", computed)
        n, time = data.num_rows, data.column("time")
        kind = time.type

        def times(name: str) -> pa.ChunkedArray | pa.Array:
            return data.column(name).cast(kind) if name in data.column_names else pa.nulls(n, kind)

        rectified, closed = times("rectified_at"), times("closed_at")
        status = data.column("status").cast(pa.string()) if "status" in data.column_names \
            else pa.nulls(n, pa.string())
        said_closed = pc.fill_null(pc.equal(status, "closed"), False)
        none = pa.scalar(None, kind)
        closed_at = pc.coalesce(closed, pc.if_else(said_closed, pc.coalesce(rectified, time), none))
        rectified_at = pc.coalesce(rectified, closed, pc.if_else(said_closed, time, none))
        reopened = data.column("reopened") if "reopened" in data.column_names else pa.nulls(n, pa.int32())
        is_closed = np.asarray(pc.is_valid(closed_at))
        data = _put(data, "status", pa.DictionaryArray.from_arrays(
            pa.array(is_closed.astype(np.int8)), pa.array(["open", "closed"])))
        data = _put(data, "rectified_at", rectified_at)
        data = _put(data, "closed_at", closed_at)
        return _put(data, "reopened", pc.max_element_wise(pc.fill_null(reopened, 0), 0).cast(pa.int32()))

    def finish(self, staging: Staging, *, threads: int = 1) -> tuple[int, int]:
        """Stage the cases, audit rows and links of the events staged, one staged file of events each at a time on
        ``threads`` threads (the audit rows while the links are searched; 0: every step in turn on the calling
        thread); return (cases made, rebounds linked). What is staged is the same whatever the threads."""
        files = list(staging.files.get("events") or [])
        if not files:
            return 0, 0
        staging.wait()
        # the cases' updated_at: when they are made, as backfill stamps them
        self.stamp = store_now(staging.con)
        cur = staging.scratch()
        try:
            with memory_cap(cur):
                return self._finish(staging, cur, files, threads=threads)
        finally:
            cur.close()

    def _finish(self, staging: Staging, cur: duckdb.DuckDBPyConnection, files: list, *,
                threads: int) -> tuple[int, int]:
        units = DispatchUnits.read(cur)
        for table in ("events", "cases", "case_log"):
            staging.columns(table)  # read once here: the threads only use what is cached
        cursors: queue.SimpleQueue = queue.SimpleQueue()  # a cursor each for DuckDB's writes (a rare cast)
        for _ in range(max(threads, 1)):
            cursors.put(cur.cursor())
        try:
            with (ThreadPoolExecutor(threads, thread_name_prefix="civicgrid-cases") if threads > 0
                  else _InTurn()) as pool:
                heads = list(pool.map(_head_of, files))
                steps = [h.pop("steps") for h in heads]
                total = int(sum(int(x.sum()) for x in steps))
                first = staging.reserve("case_log", "log_id", total) if total else 1
                log0 = _first_log_ids([h["case_id"] for h in heads], steps, first)
                del steps
                # the audit rows need no link: they are written while the links are searched
                logs = [pool.submit(self._stage_log, staging, path, log0[k], staging.new_file("case_log"),
                                    units=units, cursors=cursors) for k, path in enumerate(files)]
                del log0
                new, types = _search_columns(heads)
                n_events = len(new["case_id"])
                del heads
                case_id, old_id = find_rebounds(cur, new=new, types=types, old=_STORE_CLOSURES,
                                                old_labels=_STORE_LABEL_CLOSURES)
                del new
                order = np.argsort(case_id, kind="stable")
                links = (case_id[order], old_id[order])
                jobs = [pool.submit(self._stage_file, staging, path,
                                    {t: staging.new_file(t) for t in ("events", "cases")}, links=links, units=units,
                                    cursors=cursors) for path in files]
                made = [job.result() for job in jobs] + [job.result() for job in logs]
        finally:
            while not cursors.empty():
                cursors.get().close()
        for table in ("events", "cases", "case_log"):
            staging.rows[table] = staging.rows.get(table, 0) + sum(m.get(table, 0) for m in made)
        staging.unstage("events", files, rows=n_events)
        return sum(m.get("cases", 0) for m in made), int(case_id.size)

    def _stage_log(self, staging: Staging, path: Path, log0: np.ndarray, out: Path, *, units: DispatchUnits,
                   cursors: queue.SimpleQueue) -> dict[str, int]:
        """Write the audit rows of the cases of the staged events file ``path`` (those of its i-th event numbered
        from ``log0[i]`` on) as the staged file ``out``."""
        data = pq.read_table(path, columns=_LOG_INPUT).unify_dictionaries().combine_chunks()
        _, unit, _ = units.of(data)
        log = _log_rows(data, unit, log0, actor=self.actor)
        con = cursors.get()
        try:
            return {"case_log": staging.write_file("case_log", log, out, con=con)}
        finally:
            cursors.put(con)

    def _stage_file(self, staging: Staging, path: Path, out: dict[str, Path], *,
                    links: tuple[np.ndarray, np.ndarray], units: DispatchUnits,
                    cursors: queue.SimpleQueue) -> dict[str, int]:
        """Write the staged events file ``path`` again with its links, and its cases, as the staged files ``out``
        of each table."""
        data = pq.read_table(path).unify_dictionaries().combine_chunks()
        n = data.num_rows
        ids = data.column("event_id").to_numpy()
        linked, at = lookup(links[0], ids)
        link = links[1][np.minimum(at, len(links[1]) - 1)] if len(links[1]) else np.zeros(n, np.int64)
        rebound = pa.array(np.where(linked, link, 0), pa.int64(), mask=~linked)
        if "rebound_of" in data.column_names:
            rebound = pc.coalesce(data.column("rebound_of").cast(pa.int64()), rebound)
        data = _put(data, "rebound_of", rebound)
        types = staging.columns("events")
        events = pa.table({c: data.column(c) if c in data.column_names else pa.nulls(n) for c in types})
        cases = self._cases(data, units)
        con = cursors.get()
        try:
            return {"events": staging.write_file("events", events, out["events"], con=con),
                    "cases": staging.write_file("cases", cases, out["cases"], con=con)}
        finally:
            cursors.put(con)

    def _cases(self, data: pa.Table, units: DispatchUnits) -> pa.Table:
        """The cases of the events ``data`` (carrying their case's state and link: :meth:`with_case_state`): found and
        dispatched at the event's time, to its automatic unit (:class:`DispatchUnits`); closed when it has a closure
        time, else rectified when it has a rectification time, else dispatched."""
        n = data.num_rows
        closed, rectified = data.column("closed_at"), data.column("rectified_at")
        state = np.where(np.asarray(pc.is_valid(closed)), 2, np.where(np.asarray(pc.is_valid(rectified)), 1, 0))
        category, unit, unit_code = units.of(data)
        return pa.table({
            "case_id": data.column("event_id"), "event_id": data.column("event_id"),
            "source": data.column("source"), "problem_type": data.column("problem_type"),
            "site_id": data.column("site_id"), "category_code": category,
            "grid_code": data.column("grid_code"), "community_code": data.column("community_code"),
            "street_code": data.column("street_code"), "district_code": data.column("district_code"),
            "state": pa.DictionaryArray.from_arrays(pa.array(state.astype(np.int8)), pa.array(_CASE_STATES)),
            "found_at": data.column("time"), "deadline": data.column("deadline"), "unit": unit,
            "unit_code": unit_code, "dispatched_at": data.column("time"), "rectified_at": rectified,
            "closed_at": closed, "reworks": data.column("reopened"), "rebound_of": data.column("rebound_of"),
            "photo": pa.nulls(n, pa.string()),
            "updated_at": pa.array(np.full(n, np.datetime64(self.stamp, "us")), pa.timestamp("us")),
        })


class _InTurn(Executor):
    """An executor without threads: each job runs when it is submitted, on the calling thread."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        done: Future = Future()
        try:
            done.set_result(fn(*args, **kwargs))
        except Exception as exc:  # handed to the caller by result(), as a thread pool's job would be
            done.set_exception(exc)
        return done


def _put(data: pa.Table, name: str, column) -> pa.Table:
    """``data`` with the column ``name`` set to ``column`` (replaced, or added last)."""
    if name in data.column_names:
        return data.set_column(data.column_names.index(name), name, column)
    return data.append_column(name, column)


#: The store's closed cases an import's new cases may repeat (see :func:`find_rebounds`).
_STORE_CLOSURES = """
    SELECT c.case_id, c.problem_type, c.site_id, epoch_us(c.closed_at) AS closed_us, e.lat, e.lng
    FROM cases c JOIN events e ON e.event_id = c.event_id
    WHERE c.state = 'closed' AND c.closed_at IS NOT NULL
      AND c.problem_type IN (SELECT problem_type FROM _reb_types)
      AND epoch_us(c.closed_at) >= (SELECT min(lo) FROM _reb_types)
      AND epoch_us(c.closed_at) < (SELECT max(hi) FROM _reb_types)"""
#: The same of the store's closed cases without a type, by their events' own labels (their rebound kind).
_STORE_LABEL_CLOSURES = f"""
    SELECT c.case_id, '{LABEL_KIND}' || e.source_type AS problem_type, c.site_id,
           epoch_us(c.closed_at) AS closed_us, e.lat, e.lng
    FROM cases c JOIN events e ON e.event_id = c.event_id
    WHERE c.state = 'closed' AND c.closed_at IS NOT NULL AND c.problem_type IS NULL
      AND '{LABEL_KIND}' || e.source_type IN (SELECT problem_type FROM _reb_types)
      AND epoch_us(c.closed_at) >= (SELECT min(lo) FROM _reb_types)
      AND epoch_us(c.closed_at) < (SELECT max(hi) FROM _reb_types)"""

#: The columns of a staged events file the rebound search and the numbering of the audit rows read.
_HEAD = ["event_id", "problem_type", "site_id", "time", "lat", "lng", "rectified_at", "closed_at", "reopened"]
#: The columns of a staged events file its audit rows are made from.
_LOG_INPUT = ["event_id", "time", "deadline", "rectified_at", "closed_at", "reopened", "site_id",
              "community_code", "street_code", "district_code"]


def _n_steps(events: pa.Table) -> np.ndarray:
    """The number of audit rows of the case of each of ``events`` (carrying their case's state): found,
    registered, dispatched, two per rework round, then its rectification and its closure when it has them
    (:func:`_log_rows`)."""
    reworks = events.column("reopened").to_numpy(zero_copy_only=False).astype(np.int64)
    return (3 + 2 * reworks + np.asarray(pc.is_valid(events.column("rectified_at")))
            + np.asarray(pc.is_valid(events.column("closed_at"))))


def _micros(column) -> np.ndarray:
    """A timestamp column as microseconds since the epoch (0 where null)."""
    return pc.fill_null(column.cast(pa.timestamp("us")).cast(pa.int64()), 0).to_numpy(zero_copy_only=False)


def _head_of(path: Path) -> dict:
    """What the rebound search and the audit rows' numbering need of a staged events file (carrying their case's
    state): the cases' ids, rebound kinds (their codes and indices: problem types, else the city's labels), sites,
    times found and closed, points, and numbers of audit rows (:func:`_n_steps`), in the file's order."""
    data = pq.read_table(path, columns=_HEAD).unify_dictionaries().combine_chunks()
    site, closed = data.column("site_id"), data.column("closed_at")
    ptype = data.column("problem_type")
    # the labels are read only where a case has no type (their rebound kind): not at all on a typed import
    labels = pq.read_table(path, columns=["source_type"]).column("source_type") if ptype.null_count else ptype
    types, t = kind_codes(ptype, labels)

    def floats(name: str) -> np.ndarray:
        return pc.fill_null(data.column(name).cast(pa.float64()), float("nan")).to_numpy(zero_copy_only=False)

    return {"case_id": data.column("event_id").to_numpy(), "types": types, "t": t,
            "has_site": np.asarray(pc.is_valid(site)),
            "site": pc.fill_null(site, 0).to_numpy(zero_copy_only=False).astype(np.int64),
            "found_us": _micros(data.column("time")), "lat": floats("lat"), "lng": floats("lng"),
            "closed": np.asarray(pc.is_valid(closed)), "closed_us": _micros(closed),
            "steps": _n_steps(data)}


def _search_columns(heads: list[dict]) -> tuple[dict[str, np.ndarray], list[str]]:
    """The new cases of all files as :func:`find_rebounds` takes them, and their types' codes (each file's
    type indices moved to one list of codes)."""
    codes: dict[str, int] = {}
    ts = []
    for h in heads:
        move = np.array([codes.setdefault(c, len(codes)) if c is not None else -1 for c in h["types"]] + [-1],
                        dtype=np.int64)
        ts.append(move[h["t"]])  # index -1 (no type) takes the last
    new = {k: np.concatenate([h[k] for h in heads]) for k in heads[0] if k not in ("types", "t")}
    new["t"] = np.concatenate(ts)
    return new, list(codes)


def _first_log_ids(ids: list[np.ndarray], steps: list[np.ndarray], first: int) -> list[np.ndarray]:
    """Each case's first audit row id, file by file (``ids``: the cases', ``steps``: their numbers of audit
    rows): the cases' rows numbered from ``first`` on in case id order, then step order, as :func:`backfill`
    numbers them."""
    every, count = np.concatenate(ids), np.concatenate(steps)
    if every.size > 1 and not (np.diff(every) > 0).all():  # files and rows are in id order: no sort then
        order = np.argsort(every, kind="stable")
        log0 = np.empty_like(count)
        log0[order] = first + np.cumsum(count[order]) - count[order]
    else:
        log0 = first + np.cumsum(count) - count
    return np.split(log0, np.cumsum([len(i) for i in ids])[:-1])


#: The kinds of audit row, by step of a case's trail: found, registered, dispatched; a rework round's first half
#: (rectified) and second half (sent back: dispatched); rectified; closed. What each sets, in ``_LOG_STATES``
#: indices (-1: none), and whether it names the unit.
_FROM = np.array([-1, 0, 1, 2, 3, 2, 3])
_TO = np.array([0, 1, 2, 3, 2, 3, 4])
_NAMES_UNIT = np.array([False, False, True, False, True, False, False])


def _log_rows(events: pa.Table, unit: pa.DictionaryArray, log0: np.ndarray, *, actor: str) -> pa.Table:
    """The audit rows of the cases of ``events`` (carrying their case's state; ``unit``: each case's unit),
    those of the i-th numbered from ``log0[i]`` on (:func:`_n_steps` of them): found, registered and dispatched
    (to the case's unit) at the event's time; ``reopened`` rounds rectified → dispatched (to the unit again)
    spread evenly between its time ``t`` and its rectification (else its deadline, else its time; ``span``:
    that, at least 0), the k-th of r rectified at ``t + span * (2k - 1) / (2r + 1)`` and sent back at
    ``t + span * 2k / (2r + 1)``, each offset cut to whole seconds; its rectification; its closure."""
    reworks = events.column("reopened").to_numpy(zero_copy_only=False).astype(np.int64)
    rect, closed = events.column("rectified_at"), events.column("closed_at")
    has_rect, has_closed = np.asarray(pc.is_valid(rect)), np.asarray(pc.is_valid(closed))
    n_steps = _n_steps(events)
    found, rect_us, closed_us = _micros(events.column("time")), _micros(rect), _micros(closed)
    ids = events.column("event_id").to_numpy()
    if not reworks.any():  # no rework round (every import): steps 0-4 of a case, kinds 0, 1, 2, 5, 6
        keep = (np.arange(5) < n_steps[:, None]).ravel()
        case = np.broadcast_to(np.arange(len(ids))[:, None], (len(ids), 5)).ravel()[keep]
        log_id = (log0[:, None] + np.arange(5)).ravel()[keep]
        kind = np.broadcast_to(np.array([0, 1, 2, 5, 6]), (len(ids), 5)).ravel()[keep]
        changed = np.stack([found, found, found, rect_us, closed_us], axis=1).ravel()[keep]
        valid = np.stack([np.ones_like(has_rect)] * 3 + [has_rect, has_closed], axis=1).ravel()[keep]
    else:
        total = int(n_steps.sum())
        case = np.repeat(np.arange(len(n_steps)), n_steps)
        step = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(n_steps) - n_steps, n_steps)
        log_id = log0[case] + step
        r = reworks[case]
        rework = (step >= 3) & (step < 3 + 2 * r)
        kind = np.where(step < 3, step, np.where(rework, 3 + (step - 3) % 2, np.where(step == 3 + 2 * r, 5, 6)))
        changed = found[case]
        k = np.flatnonzero(rework)
        if k.size:
            deadline = events.column("deadline")
            end = np.where(has_rect, rect_us, np.where(np.asarray(pc.is_valid(deadline)), _micros(deadline), found))
            span = np.maximum(end - found, 0)
            ck = case[k]
            changed[k] = found[ck] + span[ck] * (step[k] - 2) // (2 * reworks[ck] + 1) // 1_000_000 * 1_000_000
        valid = np.ones(total, dtype=bool)
        for at, times, has in ((kind == 5, rect_us, has_rect), (kind == 6, closed_us, has_closed)):
            changed[at] = times[case[at]]
            valid[at] = has[case[at]]
    total = len(log_id)
    unit_codes, unit_index = codes(unit)
    return pa.table({
        "log_id": pa.array(log_id, pa.int64()),
        "case_id": pa.array(ids[case], pa.int64()),
        "changed_at": pa.array(changed, pa.int64(), mask=~valid).cast(pa.timestamp("us")),
        "actor": dictionary(np.zeros(total, np.int64), [actor], kind=pa.int8()),
        "from_state": dictionary(_FROM[kind], _LOG_STATES, kind=pa.int8()),
        "to_state": dictionary(_TO[kind], _LOG_STATES, kind=pa.int8()),
        "note": pa.nulls(total, pa.string()),
        "unit": dictionary(np.where(_NAMES_UNIT[kind], unit_index[case], -1), unit_codes),
        "photo": pa.nulls(total, pa.string()),
    })
