"""What the case modules share: the columns of ``cases``, reading a query into a frame from a store or a
connection, and the names of the automatic dispatch units (属地).

Dispatch goes to the site's ``responsible_unit`` for a case at a sample-frame site, else to the office of the
area holding it: the community's residents' committee (社区居委会), else the street office (街道办事处), else
the district's city-management bureau (the rule: :class:`civicgrid.sites.cases.units.DispatchUnits`).
"""

from __future__ import annotations

import duckdb
import pandas as pd
from civicgrid.geo.store import Store

#: What the case readers take: a store, or an open connection (inside :func:`~civicgrid.geo.store.writing`).
StoreOrConnection = Store | duckdb.DuckDBPyConnection

#: Unit name suffixes for dispatch to the area office (属地), for an area with a Chinese name.
UNIT_SUFFIX = {"community": "居委会", "street": "办事处", "district": "城市管理和综合执法局"}
#: The same for an area whose name has no Chinese character (San Francisco's "Mission" was "Mission居委会").
UNIT_SUFFIX_EN = {"community": " community office", "street": " street office", "district": " city management office"}
#: Unit when a case lies outside every area.
UNASSIGNED_UNIT = "属地待定（人工派遣）"

#: Columns of the ``cases`` table, in order (what :func:`~civicgrid.sites.cases.get_case` returns).
CASE_COLUMNS = ("case_id, event_id, source, problem_type, site_id, category_code, grid_code, community_code, "
                "street_code, district_code, state, found_at, deadline, unit, unit_code, dispatched_at, "
                "rectified_at, closed_at, reworks, rebound_of, photo, updated_at")


def query_frame(con: StoreOrConnection, query: str, params=None) -> pd.DataFrame:
    """The rows of ``query`` as a frame, on a :class:`~civicgrid.geo.store.Store` or an open connection."""
    if isinstance(con, Store):
        return con.sql(query, params)
    return con.execute(query, params).df()
