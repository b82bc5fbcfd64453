"""``--update`` of an events import: rows whose (source, id) is stored already replace the stored events when
their content differs, keeping the event id (the import's case backfill then rebuilds their cases).

A case that users have moved since it was imported (an audit row by another actor than the import) is not
rebuilt: it keeps its state and every step of its audit trail, takes the corrected record's type, time, site and
place (its deadline recomputed when the type or the time changed), and its event carries the case's state again
(:func:`refresh_kept_cases`).
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
from civicgrid.sites.cases.calendar import compute_deadlines
from civicgrid.sites.import_log import IMPORT_ACTOR

#: The stored columns an ``--update`` compares: a row that differs in one of them replaces the stored one.
UPDATE_COLUMNS = ("problem_type", "source_type", "time", "status", "source_status", "source_duplicate", "site_id",
                  "inspection_id", "text", "address", "lng", "lat", "grid_code", "community_code", "street_code",
                  "district_code", "located_by")


def apply_updates(con: duckdb.DuckDBPyConnection, data: pa.Table, again: np.ndarray, *, source: str,
                  before_query) -> tuple[pa.Table, int, np.ndarray, np.ndarray]:
    """Replace the stored events of the rows ``again`` (ids stored already) whose content differs.

    The stored event keeps its id; its row, case and audit trail are removed here and the new row (its case
    recomputed by the import's backfill) inserted in their place. A case users have moved since is kept, with
    its audit trail (:func:`refresh_kept_cases` brings it up to date once the new rows are in). Rows identical
    to the stored ones are dropped (duplicates).

    Returns
    -------
    data, unchanged, replaced, kept
        The rows to insert, how many candidate rows were identical to the stored ones, the ids of the
        stored events replaced, and those of them whose case was kept.
    """
    cand = data.filter(pa.array(again))
    cols = [c for c in UPDATE_COLUMNS if c in cand.column_names]
    extra = [c for c in ("rectified_at", "closed_at") if c in cand.column_names]
    before_query()
    con.register("_upd_new", cand.select(["dedup_key", *cols, *extra]))
    try:
        diff = " OR ".join(f"n.{c}::VARCHAR IS DISTINCT FROM o.{c}::VARCHAR" for c in [*cols, *extra])
        found = con.execute(f"""
            SELECT n.dedup_key, o.event_id, ({diff}) AS changed
            FROM _upd_new n JOIN events o ON o.dedup_key = n.dedup_key AND o.source = ?
        """, [source]).df()
    finally:
        con.unregister("_upd_new")
    changed = found[found["changed"]]
    old_id = dict(zip(changed["dedup_key"], changed["event_id"], strict=True))
    keys = data["dedup_key"].to_numpy(zero_copy_only=False)
    ids = data["event_id"].to_numpy().copy()
    replace = again & np.array([k in old_id for k in keys], dtype=bool)
    ids[replace] = [old_id[k] for k in keys[replace]]
    keep = ~again | replace
    kept = np.zeros(0, np.int64)
    if replace.any():
        gone = pd.DataFrame({"event_id": ids[replace].astype(np.int64)})
        con.register("_upd_gone", gone)
        try:
            kept = con.execute(f"""
                SELECT DISTINCT c.event_id FROM cases c JOIN _upd_gone g ON c.event_id = g.event_id
                JOIN case_log l ON l.case_id = c.case_id WHERE l.actor <> '{IMPORT_ACTOR}' ORDER BY 1
            """).fetchnumpy()["event_id"].astype(np.int64)
            moved = "SELECT event_id FROM _upd_gone WHERE event_id NOT IN (SELECT unnest(?::BIGINT[]))"
            con.execute(f"DELETE FROM case_log WHERE case_id IN (SELECT c.case_id FROM cases c WHERE c.event_id IN "
                        f"({moved}))", [kept.tolist()])
            con.execute(f"DELETE FROM cases WHERE event_id IN ({moved})", [kept.tolist()])
            con.execute("DELETE FROM events WHERE event_id IN (SELECT event_id FROM _upd_gone)")
        finally:
            con.unregister("_upd_gone")
    data = data.set_column(0, "event_id", pa.array(ids, pa.int64())).filter(pa.array(keep))
    return data, int(again.sum() - replace.sum()), ids[replace].astype(np.int64), kept


def refresh_kept_cases(con: duckdb.DuckDBPyConnection, event_ids: np.ndarray) -> int:
    """Bring the kept cases of the replaced events ``event_ids`` (cases users moved) up to date with the new
    rows, once they are stored: the case takes the event's type, time (``found_at``), site and place, and a
    deadline recomputed on the working clock when the type or the time changed; its state, unit and audit trail
    stay. The event then carries its case's state (status, deadline, rectified and closed times, reworks).

    Returns
    -------
    int
        The number of cases updated.
    """
    ids = np.asarray(event_ids, dtype=np.int64)
    if not ids.size:
        return 0
    rows = con.execute("""
        SELECT c.event_id, e.time, e.problem_type, c.deadline,
               (e.time IS DISTINCT FROM c.found_at OR e.problem_type IS DISTINCT FROM c.problem_type) AS changed
        FROM cases c JOIN events e ON e.event_id = c.event_id WHERE c.event_id IN (SELECT unnest(?::BIGINT[]))
        ORDER BY c.event_id
    """, [ids.tolist()]).df()
    deadline = rows["deadline"].to_numpy(dtype="M8[us]").copy()
    ch = rows["changed"].to_numpy(dtype=bool)
    if ch.any():
        deadline[ch] = compute_deadlines(con, rows["time"].to_numpy(dtype="M8[us]")[ch],
                                         rows["problem_type"].to_numpy(dtype=object)[ch]).astype("M8[us]")
    con.register("_kept_df", pd.DataFrame({"event_id": rows["event_id"].to_numpy(np.int64), "deadline": deadline}))
    try:
        con.execute("CREATE OR REPLACE TEMP TABLE _kept AS SELECT * FROM _kept_df")
    finally:
        con.unregister("_kept_df")
    try:
        con.execute("""
            UPDATE cases SET problem_type = e.problem_type, site_id = e.site_id, category_code = s.category_code,
                   grid_code = e.grid_code, community_code = e.community_code, street_code = e.street_code,
                   district_code = e.district_code, found_at = e.time, deadline = k.deadline
            FROM _kept k JOIN events e ON e.event_id = k.event_id LEFT JOIN sites s ON s.site_id = e.site_id
            WHERE cases.event_id = k.event_id
        """)
        con.execute("""
            UPDATE events SET status = CASE WHEN c.state = 'closed' THEN 'closed' ELSE 'open' END,
                   deadline = c.deadline, rectified_at = c.rectified_at, closed_at = c.closed_at,
                   reopened = c.reworks, rebound_of = c.rebound_of
            FROM _kept k JOIN cases c ON c.event_id = k.event_id WHERE events.event_id = k.event_id
        """)
    finally:
        con.execute("DROP TABLE IF EXISTS _kept")
    return len(rows)
