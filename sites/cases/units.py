"""The automatic dispatch unit (属地) of a case and its site's category, for arrays of events.

One rule for every case a store gets: an import's cases (:mod:`~civicgrid.sites.cases.bulk`), the backfill's,
and each new case (:func:`~civicgrid.sites.cases.create_case`).
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from civicgrid.geo.store import quote
from civicgrid.sites.cases._arrays import codes, dictionary, lookup
from civicgrid.sites.cases._sql import UNASSIGNED_UNIT, UNIT_SUFFIX, UNIT_SUFFIX_EN

#: A character of the CJK blocks (CJK radicals to the unified ideographs, and the compatibility ideographs).
_CJK = "[\u2e80-\u9fff\uf900-\ufaff]"


class DispatchUnits:
    """The category of each case's site and its automatic unit (属地) and unit code, for arrays of events (an
    import's cases, :func:`~civicgrid.sites.cases.bulk.backfill`'s, and new cases:
    :func:`~civicgrid.sites.cases.create_case`); the sites and areas are read once.

    The unit is the site's ``responsible_unit`` (trimmed of spaces; blank counts as none) for a case at a
    sample-frame site, with no unit code; else the office of the first of the case's community, street and
    district the ``areas`` table names (its name and :data:`~civicgrid.sites.cases._sql.UNIT_SUFFIX`, or
    :data:`~civicgrid.sites.cases._sql.UNIT_SUFFIX_EN` for a name without a Chinese character), else
    :data:`~civicgrid.sites.cases._sql.UNASSIGNED_UNIT`; the unit code is that of the first of them the table
    holds (named or not)."""

    def __init__(self, sites: pd.DataFrame, areas: pd.DataFrame) -> None:
        self.units: dict[str, int] = {}
        sites = sites.sort_values("site_id", kind="stable").drop_duplicates("site_id")
        self.site_ids = sites["site_id"].to_numpy(np.int64)
        self.categories = sorted(set(sites["category_code"].dropna()))
        where = {c: i for i, c in enumerate(self.categories)}
        self.site_category = np.array([where.get(c, -1) if isinstance(c, str) else -1
                                       for c in sites["category_code"]], dtype=np.int64)
        self.site_unit = np.array([self._unit(u) if isinstance(u, str) else -1 for u in sites["unit"]],
                                  dtype=np.int64)
        self.codes: list[str] = []
        self.levels: dict[str, dict[str, tuple[int, int]]] = {}
        for level in ("community", "street", "district"):
            rows = areas[areas["level"] == level].drop_duplicates("code")
            self.levels[level] = {code: (self._unit(unit) if isinstance(unit, str) else -1, self._code(code))
                                  for code, unit in zip(rows["code"], rows["unit"], strict=True)}
        self.unassigned = self._unit(UNASSIGNED_UNIT)

    def _unit(self, name: str) -> int:
        return self.units.setdefault(name, len(self.units))

    def _code(self, code: str) -> int:
        self.codes.append(code)
        return len(self.codes) - 1

    @classmethod
    def read(cls, con: duckdb.DuckDBPyConnection) -> DispatchUnits:
        """The sites' categories and responsible units and the areas' offices, from the store."""
        sites = con.execute("""
            SELECT site_id, category_code, CASE WHEN nullif(trim(responsible_unit), '') IS NOT NULL
                                                THEN trim(responsible_unit) END AS unit
            FROM sites WHERE site_id IS NOT NULL""").df()
        zh, en = (" ".join(f"WHEN {quote(level)} THEN {quote(text)}" for level, text in suffixes.items())
                  for suffixes in (UNIT_SUFFIX, UNIT_SUFFIX_EN))
        areas = con.execute(f"""
            SELECT level, code, name || CASE WHEN regexp_matches(name, '{_CJK}') THEN (CASE level {zh} END)
                                             ELSE (CASE level {en} END) END AS unit
            FROM areas WHERE code IS NOT NULL AND level IN ('community', 'street', 'district')""").df()
        return cls(sites, areas)

    def of(self, data: pa.Table) -> tuple[pa.DictionaryArray, pa.DictionaryArray, pa.DictionaryArray]:
        """The category code, unit and unit code of the cases of the events ``data`` (``site_id``,
        ``community_code``, ``street_code``, ``district_code``)."""
        n = data.num_rows
        site = data.column("site_id")
        sid = pc.fill_null(site, 0).to_numpy(zero_copy_only=False).astype(np.int64)
        hit, at = lookup(self.site_ids, sid)
        hit &= np.asarray(pc.is_valid(site))
        at = np.minimum(at, max(len(self.site_ids) - 1, 0))
        category = np.where(hit, self.site_category[at], -1) if len(self.site_ids) else np.full(n, -1)
        unit = np.where(hit, self.site_unit[at], -1) if len(self.site_ids) else np.full(n, -1)
        by_site = unit >= 0
        code = np.full(n, -1, dtype=np.int64)
        for level in ("community", "street", "district"):
            values, index = codes(data.column(f"{level}_code"))
            known = self.levels[level]
            name_of = np.array([known.get(v, (-1, -1))[0] if v is not None else -1 for v in values] + [-1],
                               dtype=np.int64)[index]  # index -1 (null) takes the last
            code_of = np.array([known.get(v, (-1, -1))[1] if v is not None else -1 for v in values] + [-1],
                               dtype=np.int64)[index]
            unit = np.where(unit < 0, name_of, unit)
            code = np.where(code < 0, code_of, code)
        unit = np.where(unit < 0, self.unassigned, unit)
        code = np.where(by_site, -1, code)
        names = list(self.units)
        return (dictionary(category, self.categories), dictionary(unit, names),
                dictionary(code, self.codes))
