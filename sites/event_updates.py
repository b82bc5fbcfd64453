"""``--update`` of an events import: rows whose (source, id) is stored already replace the stored events when
their content differs, keeping the event id (the import's case backfill then rebuilds their cases)."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

#: The stored columns an ``--update`` compares: a row that differs in one of them replaces the stored one.
UPDATE_COLUMNS = ("problem_type", "source_type", "time", "status", "source_status", "source_duplicate", "site_id",
                  "inspection_id", "text", "address", "lng", "lat", "grid_code", "community_code", "street_code",
                  "district_code", "located_by")


def apply_updates(con: duckdb.DuckDBPyConnection, data: pa.Table, again: np.ndarray, *, source: str,
                  before_query) -> tuple[pa.Table, int, np.ndarray]:
    """Replace the stored events of the rows ``again`` (ids stored already) whose content differs.

    The stored event keeps its id; its row, case and audit trail are removed here and the new row (its case
    recomputed by the import's backfill) inserted in their place. Rows identical to the stored ones are dropped
    (duplicates).

    Returns
    -------
    data, unchanged, replaced
        The rows to insert, how many candidate rows were identical to the stored ones, and the ids of the
        stored events replaced.
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
    if replace.any():
        gone = pd.DataFrame({"event_id": ids[replace].astype(np.int64)})
        con.register("_upd_gone", gone)
        try:
            con.execute("DELETE FROM case_log WHERE case_id IN (SELECT c.case_id FROM cases c "
                        "JOIN _upd_gone g ON c.event_id = g.event_id)")
            con.execute("DELETE FROM cases WHERE event_id IN (SELECT event_id FROM _upd_gone)")
            con.execute("DELETE FROM events WHERE event_id IN (SELECT event_id FROM _upd_gone)")
        finally:
            con.unregister("_upd_gone")
    data = data.set_column(0, "event_id", pa.array(ids, pa.int64())).filter(pa.array(keep))
    return data, int(again.sum() - replace.sum()), ids[replace].astype(np.int64)
