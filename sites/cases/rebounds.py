"""Rebounds (回头看): a new case of the same problem type at the same site, or within ``rebound_radius_m`` metres,
found within ``rebound_days`` days after an earlier case was closed, is linked to the most recent such case
(``rebound_of``). Cases without a problem type compare the city's own labels of their events instead (their *kind*,
:func:`kind_sql`): San Francisco's cases, 88 % of them with a label no type was mapped to, had no rebounds at all."""

from __future__ import annotations

import itertools
import math

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from civicgrid.geo.distance import EARTH_RADIUS_M, haversine_m
from civicgrid.geo.store import quote
from civicgrid.sites.cases._arrays import codes
from civicgrid.sites.cases._memory import memory_cap
from civicgrid.sites.cases.config import get_settings

#: Rows (new cases plus earlier closed cases) :func:`link_rebounds` holds in memory at once; a batch holds
#: whole problem types, so one type larger than this is still handled in one batch.
REBOUND_BATCH_ROWS = 2_000_000
#: Up to this many cases are linked by a direct search (a case opened by a user), above it in bulk.
FEW_CASES = 256
#: The side of the squares the search within the radius buckets closures in, in radii: each new case searches
#: the squares whose nearest point is within the radius (with 2.02: its own and 1 to 3 across its nearer sides).
#: Smaller squares meet fewer closures beyond the radius but cost more searches: 1.0 and 0.5 (9 and 21 squares)
#: were slower on the demo city at 1M-10M events, 4.0 too.
CELL_PER_RADIUS = 2.02
#: Squares are searched up to this factor × the radius away (grid distances are lower bounds of true ones).
_MARGIN = 1.01
#: Metres per degree of latitude on the sphere of the rebound distance (:mod:`civicgrid.geo.distance`).
_M_PER_DEG = EARTH_RADIUS_M * math.pi / 180

#: The prefix of a rebound kind that is a city's own label (a case without a problem type): no type's code
#: starts so, so a label never equals a type.
LABEL_KIND = "label:"


def kind_sql(case: str = "c", event: str = "e") -> str:
    """SQL of the rebound kind of a case (alias ``case``) joined with its event (alias ``event``): its problem type,
    else :data:`LABEL_KIND` and the city's own label of its event (``events.source_type``); NULL without either."""
    return f"coalesce({case}.problem_type, {quote(LABEL_KIND)} || {event}.source_type)"


def kind_codes(problem_type, source_type) -> tuple[list[str], np.ndarray]:
    """The distinct rebound kinds of the text columns ``problem_type`` and ``source_type`` (the city's labels) and
    each row's index among them (-1: neither), as :func:`kind_sql`."""
    kinds, index = codes(problem_type)
    untyped = index < 0
    if untyped.any():
        labels, at = codes(pc.filter(source_type, pa.array(untyped)))
        index = index.copy()
        index[untyped] = np.where(at >= 0, at + len(kinds), -1)
        kinds = [*kinds, *(LABEL_KIND + str(label) for label in labels)]
    return kinds, index


def has_labels(kinds) -> bool:
    """Whether any of the rebound ``kinds`` is a city's label (the closures searched then include cases without a
    type, read with their events' labels)."""
    return any(str(k).startswith(LABEL_KIND) for k in kinds)


class _Closures:
    """Earlier closed cases sorted by (bucket key, closed_at, case_id); each key's cases are one segment.

    ``rank`` is each closure time's rank among all times of the batch (closures and findings) and ``n_ranks``
    their number, so that (segment, time) pairs become single integers ordered like the pairs.
    """

    def __init__(self, key, closed, ids, rank, n_ranks: int, lat=None, lng=None) -> None:
        order = np.lexsort((ids, closed, key))
        order = order[_kept(key[order], closed[order], None if lat is None else lat[order],
                            None if lng is None else lng[order])]
        self.closed, self.ids = closed[order], ids[order]
        self.lat = None if lat is None else lat[order]
        self.lng = None if lng is None else lng[order]
        self.cos = None if lat is None else np.cos(np.radians(self.lat))
        key = key[order]
        first = np.flatnonzero(np.diff(key, prepend=key[:1] - 1)) if len(key) else np.zeros(0, np.int64)
        self.keys, self.start = key[first], first
        self.end = np.append(self.start[1:], len(order))
        seg = np.cumsum(np.diff(key, prepend=key[:1]) != 0) if len(key) else np.zeros(0, np.int64)
        self.n_ranks = int(n_ranks)
        self.pair = seg.astype(np.int64) * self.n_ranks + rank[order]  # sorted: (segment, time rank)

    def improve(self, q, key, found, rank, start, self_id, best_c, best_i, lat=None, lng=None, cos=None,
                radius=None) -> None:
        """Raise ``(best_c, best_i)`` of queries ``q`` to the latest closure of their segment that qualifies.

        A closure qualifies when it was closed in ``[start, found)``, is another case and, with ``radius``,
        lies within ``radius`` metres. The walk goes back from the last closure before ``found`` (one
        ``searchsorted`` on the (segment, time rank) pairs) in (closed_at, case_id) order and stops at the
        first that qualifies, at the window's start, or at the best closure found so far (``best_c``,
        ``best_i``, updated in place), checking 1, 2, 4, … 64 closures at a time.
        """
        if not len(self.keys) or not len(q):
            return
        seg = np.minimum(np.searchsorted(self.keys, key), len(self.keys) - 1)
        hit = self.keys[seg] == key
        lo = self.start[seg]
        pos = np.searchsorted(self.pair, seg * self.n_ranks + rank[q]) - 1  # last closure before found
        act = np.flatnonzero(hit & (pos >= lo))
        # the walks that stop at once: the last closure is before the window or not better than the best
        p, idx = pos[act], q[act]
        oc, oi, bc = self.closed[p], self.ids[p], best_c[idx]
        act = act[(oc >= start[idx]) & ((oc > bc) | ((oc == bc) & (oi > best_i[idx])))]
        width = 1
        while act.size:
            idx = q[act]
            cand = pos[act, None] - np.arange(width)
            valid = cand >= lo[act, None]
            cand = np.where(valid, cand, lo[act, None])
            oc, oi = self.closed[cand], self.ids[cand]
            bc, bi = best_c[idx, None], best_i[idx, None]
            # eligible: in the window and better than the best so far (both stay false once false on the walk)
            go = valid & (oc >= start[idx, None]) & ((oc > bc) | ((oc == bc) & (oi > bi)))
            ok = go & (oi != self_id[idx, None])
            if radius is not None:  # the distances of the eligible ones only
                r, c = np.nonzero(ok)
                near = haversine_m(lng[idx[r]], lat[idx[r]], self.lng[cand[r, c]], self.lat[cand[r, c]],
                                   cos_lat1=cos[idx[r]], cos_lat2=self.cos[cand[r, c]]) <= radius
                ok[r[~near], c[~near]] = False
            got = ok.any(axis=1)
            rows = np.flatnonzero(got)
            j = ok[rows].argmax(axis=1)
            best_c[idx[rows]] = oc[rows, j]
            best_i[idx[rows]] = oi[rows, j]
            more = ~got & go.all(axis=1)
            pos[act] -= width
            act = act[more]
            width = min(2 * width, 64)


def _kept(key: np.ndarray, closed: np.ndarray, lat: np.ndarray | None, lng: np.ndarray | None) -> np.ndarray:
    """The closures (sorted by key, closed_at, case_id) that can be a case's latest: a closure with two others
    of larger ids in the same key, closed at the same time (and, with points, at the same point) never is, as
    at most one of the two is the case itself and the other is later in (closed_at, case_id) order. Positions
    of the kept ones, in order; an import of many events at the same time and place is searched as one."""
    n = len(key)
    if n < 3:
        return np.arange(n)
    run = (key[2:] == key[:-2]) & (closed[2:] == closed[:-2])  # rows i, i+1, i+2 share key and time
    if not run.any():
        return np.arange(n)
    if lat is None:
        return np.flatnonzero(~np.concatenate([run, [False, False]]))
    # the rows in such runs, sorted by (run, point, case_id) within each run (a stable sort keeps id order)
    in_run = np.zeros(n, dtype=bool)
    in_run[:-2] |= run
    in_run[1:-1] |= run
    in_run[2:] |= run
    rows = np.flatnonzero(in_run)
    starts = np.ones(rows.size, dtype=bool)
    starts[1:] = ((key[rows[1:]] != key[rows[:-1]]) | (closed[rows[1:]] != closed[rows[:-1]])
                  | (rows[1:] != rows[:-1] + 1))
    group = np.cumsum(starts)
    point = lat[rows].view(np.int64) * np.int64(-7046029254386353131) + lng[rows].view(np.int64)  # a hash
    perm = np.lexsort((point, group))  # stable: ids ascending within (run, point hash)
    sub, group = rows[perm], group[perm]
    drop = np.zeros(n, dtype=bool)
    same = ((group[2:] == group[:-2])
            & (lat[sub[2:]] == lat[sub[:-2]]) & (lng[sub[2:]] == lng[sub[:-2]])
            & (lat[sub[1:-1]] == lat[sub[:-2]]) & (lng[sub[1:-1]] == lng[sub[:-2]]))
    drop[sub[:-2][same]] = True
    return np.flatnonzero(~drop)


def _grid_keys(t, lat, lng, *, c0: float, radius: float, n_types: int):
    """Square buckets for the search within ``radius``: (gx, gy), the position in the bucket (0..1 in x and y),
    the side of a square (metres), the reach (how many squares away a point within the radius may lie) and a
    key function of (type, gx, gy).

    North-south metres per degree are exact on the sphere; east-west ones are scaled by ``c0`` (the cosine of
    the largest latitude), so distances on the grid never exceed true ones (:func:`_neighbours`). The side is
    :data:`CELL_PER_RADIUS` × ``radius``, larger when the key would not fit in 62 bits.
    """
    side = CELL_PER_RADIUS * radius
    while True:
        reach = math.ceil(_MARGIN * radius / side)
        y, x = lat * _M_PER_DEG / side, lng * _M_PER_DEG * c0 / side
        gy, gx = np.floor(y).astype(np.int64), np.floor(x).astype(np.int64)
        x0, y0 = (int(gx.min()), int(gy.min())) if len(gx) else (0, 0)
        nx = (int(gx.max()) - x0 + 1 + 2 * reach) if len(gx) else 1 + 2 * reach
        ny = (int(gy.max()) - y0 + 1 + 2 * reach) if len(gy) else 1 + 2 * reach
        if n_types * nx * ny < 2**62:
            break
        side *= 2.0

    def key(ti, ix, iy):
        return (ti.astype(np.int64) * nx + (ix - x0 + reach)) * ny + (iy - y0 + reach)

    return gx, gy, x - gx, y - gy, side, reach, ny, key


def _neighbours(fx: np.ndarray, fy: np.ndarray, *, reach: int, side: float, radius: float):
    """The squares a point within ``radius`` of a query may lie in: offsets ``(dx, dy)`` from the query's square,
    nearest first, each with the mask of the queries (at ``fx``, ``fy`` in their squares) that must search it.

    A square is searched when its nearest point on the grid is within :data:`_MARGIN` × ``radius``: grid
    distances are at most the great-circle ones up to terms of relative size (angle)² / 24 (east-west scaled by
    the cosine of the batch's largest latitude, at most the product of the two points' cosines), about 1e-9 at
    1 km, and the margin covers them and rounding by far.
    """
    reach_m2 = (_MARGIN * radius) ** 2
    offsets = sorted(((dx, dy) for dx in range(-reach, reach + 1) for dy in range(-reach, reach + 1)),
                     key=lambda d: (d[0] ** 2 + d[1] ** 2, d))  # the own square first: its best ends others' walks
    steps = range(-reach, reach + 1)
    gap_x = {d: 0.0 if d == 0 else (d - fx if d > 0 else -d - 1 + fx) * side for d in steps}  # metres to its side
    gap_y = {d: 0.0 if d == 0 else (d - fy if d > 0 else -d - 1 + fy) * side for d in steps}
    for dx, dy in offsets:
        if dx == 0 and dy == 0:
            yield dx, dy, None
            continue
        mask = np.square(gap_x[dx]) + np.square(gap_y[dy]) <= reach_m2
        if mask.any():
            yield dx, dy, mask


def _time_ranks(found: np.ndarray, closed: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Integers ordered as the times ``found`` and ``closed`` (microseconds), and one more than the largest: the
    seconds since the earliest when all are whole seconds and (segment, time) pairs of the closures fit in 62
    bits, else the ranks of the distinct times (a sort of them all)."""
    both = [a for a in (found, closed) if len(a)]
    lo, hi = (min(int(a.min()) for a in both), max(int(a.max()) for a in both)) if both else (0, 0)
    span = (hi - lo) // 1_000_000 + 2
    if span * (len(closed) + 1) < 2**62 and not (found % 1_000_000).any() and not (closed % 1_000_000).any():
        return (found - lo) // 1_000_000, (closed - lo) // 1_000_000, span
    times, rank = np.unique(np.concatenate([found, closed]), return_inverse=True)
    n = len(found)
    return rank[:n].astype(np.int64), rank[n:].astype(np.int64), len(times) + 1


def _rebound_batch(new: dict, old: dict, *, radius: float, window_us: int) -> tuple[np.ndarray, np.ndarray]:
    """Links (case_id, old case_id) of one batch of new cases against the earlier closed cases of their types."""
    n = len(new["case_id"])
    best_c = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
    best_i = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
    found, self_id = new["found_us"], new["case_id"]
    start = found - window_us
    n_types = int(max(new["t"].max(initial=0), old["t"].max(initial=0))) + 1
    new_rank, old_rank, n_ranks = _time_ranks(found, old["closed_us"])
    # 1. the same site: buckets (type, site)
    qs, os_ = np.flatnonzero(new["has_site"]), np.flatnonzero(old["has_site"])
    if qs.size and os_.size:
        _, site = np.unique(np.concatenate([new["site"][qs], old["site"][os_]]), return_inverse=True)
        n_sites = int(site.max()) + 1
        qkey = new["t"][qs].astype(np.int64) * n_sites + site[:qs.size]
        okey = old["t"][os_].astype(np.int64) * n_sites + site[qs.size:]
        index = _Closures(okey, old["closed_us"][os_], old["case_id"][os_], old_rank[os_], n_ranks)
        order = np.lexsort((found[qs], qkey))  # queries in index order: searches touch memory in sequence
        index.improve(qs[order], qkey[order], found, new_rank, start, self_id, best_c, best_i)
    # 2. within the radius: buckets (type, grid square), each new case against its square and 3 neighbours
    qf = np.flatnonzero(np.isfinite(new["lat"]) & np.isfinite(new["lng"]))
    of = np.flatnonzero(np.isfinite(old["lat"]) & np.isfinite(old["lng"]))
    if qf.size and of.size:
        lat = np.concatenate([new["lat"][qf], old["lat"][of]])
        lng = np.concatenate([new["lng"][qf], old["lng"][of]])
        c0 = math.cos(math.radians(min(float(np.abs(lat).max()), 89.9)))
        t = np.concatenate([new["t"][qf], old["t"][of]])
        gx, gy, fx, fy, side, reach, ny, key = _grid_keys(t, lat, lng, c0=c0, radius=radius, n_types=n_types)
        m = qf.size
        index = _Closures(key(t[m:], gx[m:], gy[m:]), old["closed_us"][of], old["case_id"][of], old_rank[of],
                          n_ranks, lat[m:], lng[m:])
        qkey = key(t[:m], gx[:m], gy[:m])
        order = np.lexsort((found[qf], qkey))  # queries in index order (a neighbour's key is a constant shift)
        qf, qkey, fx, fy = qf[order], qkey[order], fx[:m][order], fy[:m][order]
        del lat, lng, t, gx, gy
        cos = np.cos(np.radians(new["lat"]))
        for dx, dy, mask in _neighbours(fx, fy, reach=reach, side=side, radius=radius):
            q, k = (qf, qkey) if mask is None else (qf[mask], qkey[mask])
            index.improve(q, k + (dx * ny + dy), found, new_rank, start, self_id, best_c, best_i,
                          lat=new["lat"], lng=new["lng"], cos=cos, radius=radius)
    linked = best_i != np.iinfo(np.int64).min
    return self_id[linked], best_i[linked]


def link_rebounds(con: duckdb.DuckDBPyConnection, *, case_ids=None, radius_m: float | None = None,
                  days: float | None = None) -> int:
    """Link cases to the earlier closed case they repeat (回头看); return the number of links set.

    A case ``c`` rebounds from ``o`` when both have the same kind (problem type, else the city's own label:
    :func:`kind_sql`), they are at the same site or within
    ``radius_m`` metres (great-circle distance of the events' points on a sphere of radius 6,371,008.8 m), and
    ``o`` was closed before ``c`` was found, at most ``days`` days before. The most recent such closure wins
    (on a tie, the larger case id). Cases already linked keep their link.

    Near-linear at any size: the closed cases are sorted by (type, site, closed_at) and by (type, square of
    side ``2 × radius_m``, closed_at); each new case searches its site, its square and the 1 to 3 squares
    across its nearer sides that the radius reaches for the last closure before it was found, and walks back
    only until one qualifies, the window ends or the best so far is older. Closures that can never be the
    latest (a third at one time and point) are left out. No candidate pairs are materialised; memory is bounded
    by batches of whole problem types (:data:`REBOUND_BATCH_ROWS`).

    Parameters
    ----------
    con
        A read-write connection (inside :func:`geo.store.writing`).
    case_ids
        Cases to link (a list or array; default: every unlinked case).
    radius_m, days
        Default: the settings ``rebound_radius_m`` and ``rebound_days``.
    """
    with memory_cap(con):
        return _link_rebounds(con, case_ids=case_ids, radius_m=radius_m, days=days)


def _link_rebounds(con: duckdb.DuckDBPyConnection, *, case_ids, radius_m, days) -> int:
    radius, window_us = _radius_window(con, radius_m=radius_m, days=days)
    if case_ids is not None and len(case_ids) <= FEW_CASES:
        return _link_few(con, np.unique(np.asarray(case_ids, dtype=np.int64)), radius=radius,
                         window_us=window_us)
    ranges = _case_id_ranges(con)
    if case_ids is not None:
        ids = np.unique(np.asarray(case_ids, dtype=np.int64))
        if not ids.size or not ranges:
            return 0
        con.register("_link_ids_df", pd.DataFrame({"case_id": ids}))
        con.execute("CREATE OR REPLACE TEMP TABLE _link_ids AS SELECT * FROM _link_ids_df")
        con.unregister("_link_ids_df")
        del ids
        subset = "AND c.case_id IN (SELECT case_id FROM _link_ids WHERE case_id >= $lo AND case_id < $hi)"
    else:
        subset = ""
    try:
        types = _collect_cases(con, ranges, subset=subset, window_us=window_us)
        if types is None:
            return 0
        case_id, old_id = _search_batches(con, types, radius=radius, window_us=window_us)
        if not case_id.size:
            return 0
        _write_links(con, case_id, old_id)
        return int(case_id.size)
    finally:
        for name in ("_link_ids", *_TEMP_TABLES):
            con.execute(f"DROP TABLE IF EXISTS {name}")


#: The temp tables of a bulk search.
_TEMP_TABLES = ("_reb_new", "_reb_old", "_reb_types", "_reb", "_reb_ev")


def _radius_window(con: duckdb.DuckDBPyConnection, *, radius_m: float | None,
                   days: float | None) -> tuple[float, int]:
    """The rebound radius (metres) and window (microseconds): the arguments, else the store's settings."""
    cfg = get_settings(con)
    radius = float(radius_m if radius_m is not None else cfg["rebound_radius_m"])
    window = float(days if days is not None else cfg["rebound_days"])
    return radius, math.floor(window * 86400e6 + 0.5)


def _search_batches(con: duckdb.DuckDBPyConnection, types: pd.DataFrame, *, radius: float,
                    window_us: int) -> tuple[np.ndarray, np.ndarray]:
    """The links (case ids, the closed cases they repeat) of the cases of ``_reb_new`` among ``_reb_old``,
    in batches of whole problem types."""
    links = []
    for tlo, thi in _type_batches(con, types):
        new = _fetch_points(con, "_reb_new", "found_us", tlo, thi)
        old = _fetch_points(con, "_reb_old", "closed_us", tlo, thi)
        links.append(_rebound_batch(new, old, radius=radius, window_us=window_us))
        del new, old
    return np.concatenate([a for a, _ in links]), np.concatenate([b for _, b in links])


def find_rebounds(con: duckdb.DuckDBPyConnection, *, new: dict[str, np.ndarray], types: list[str], old: str,
                  old_labels: str | None = None, radius_m: float | None = None,
                  days: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The rebound links of cases not written to ``cases`` yet (an import's, before it is published), by the
    rule and search of :func:`link_rebounds`; nothing is written.

    Parameters
    ----------
    con
        A connection on the store.
    new
        The cases to link, as arrays of one length: ``case_id``, ``t`` (their kind, an index into
        ``types``; negative: none, such a case is neither linked nor a closure), ``site`` and ``has_site``
        (the site id, where one is), ``found_us`` (when found, microseconds since the epoch), ``lat``, ``lng``
        (NaN where none), ``closed_us`` and ``closed`` (when closed, where it is): the new cases are closures
        later new cases may repeat too.
    types
        The kinds' codes: problem types' codes, and the city's labels marked by :data:`LABEL_KIND`
        (:func:`kind_codes`).
    old
        SQL of the store's closed cases with a problem type they may repeat: ``case_id, problem_type, site_id,
        closed_us, lat, lng``. It may use the temp table ``_reb_types`` (``problem_type``: the kind; ``lo``,
        ``hi``: the closures that can matter to the new cases of the kind, ``closed_us`` in ``[lo, hi)``) to
        read less; only those closures are kept in any case.
    old_labels
        The same for the store's closed cases without a type, their kind (``problem_type``) being their label
        marked by :data:`LABEL_KIND`; read only when a kind of ``types`` is a label.
    radius_m, days
        Default: the settings ``rebound_radius_m`` and ``rebound_days``.

    Returns
    -------
    case_id, old_id
        The cases linked (in no particular order) and the case each repeats.
    """
    with memory_cap(con):
        radius, window_us = _radius_window(con, radius_m=radius_m, days=days)
        t = np.asarray(new["t"], dtype=np.int64)
        typed = t >= 0
        n_types = len(types)
        count = np.bincount(t[typed], minlength=n_types)
        if not count.any():
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        found = np.asarray(new["found_us"], dtype=np.int64)
        lo = np.full(n_types, np.iinfo(np.int64).max, dtype=np.int64)
        hi = np.full(n_types, np.iinfo(np.int64).min, dtype=np.int64)
        np.minimum.at(lo, t[typed], found[typed])
        np.maximum.at(hi, t[typed], found[typed])
        lo -= window_us
        present = np.flatnonzero(count)
        frame = pd.DataFrame({"problem_type": [types[i] for i in present], "t": present.astype(np.int32),
                              "lo": lo[present], "hi": hi[present]})
        try:
            con.register("_reb_types_df", frame)
            con.execute("CREATE OR REPLACE TEMP TABLE _reb_types AS SELECT * FROM _reb_types_df")
            con.unregister("_reb_types_df")
            stored = con.execute(f"""
                SELECT o.case_id::BIGINT AS case_id, t.t, o.site_id IS NOT NULL AS has_site,
                       coalesce(o.site_id, 0)::BIGINT AS site, o.closed_us::BIGINT AS closed_us,
                       coalesce(o.lat, 'nan'::DOUBLE)::DOUBLE AS lat, coalesce(o.lng, 'nan'::DOUBLE)::DOUBLE AS lng
                FROM ({old}{f" UNION ALL {old_labels}" if old_labels and has_labels(types) else ""}) o
                JOIN _reb_types t ON t.problem_type = o.problem_type
                WHERE o.closed_us >= t.lo AND o.closed_us < t.hi""").fetchnumpy()
        finally:
            con.execute("DROP TABLE IF EXISTS _reb_types")
        stored = {k: np.asarray(v) for k, v in stored.items()}
        # the new cases' own closures that can matter to the new cases of their type
        closed_us = np.asarray(new["closed_us"], dtype=np.int64)
        tt = np.where(typed, t, 0)
        mine = np.flatnonzero(typed & np.asarray(new["closed"], dtype=bool) & (closed_us >= lo[tt])
                              & (closed_us < hi[tt]))
        old_t = np.concatenate([stored["t"].astype(np.int64), t[mine]])
        count = count + np.bincount(old_t, minlength=n_types)
        cols = {"case_id": np.asarray(new["case_id"], dtype=np.int64), "has_site": np.asarray(new["has_site"], bool),
                "site": np.asarray(new["site"], dtype=np.int64), "lat": np.asarray(new["lat"], dtype=np.float64),
                "lng": np.asarray(new["lng"], dtype=np.float64)}
        links = []
        for tlo, thi in _count_batches(count):
            q = np.flatnonzero((t >= tlo) & (t <= thi))
            o = np.flatnonzero((old_t >= tlo) & (old_t <= thi))
            s, m = o[o < stored["t"].size], mine[o[o >= stored["t"].size] - stored["t"].size]
            batch_new = {"t": t[q], "found_us": found[q], **{k: v[q] for k, v in cols.items()}}
            batch_old = {"t": old_t[o], "closed_us": np.concatenate([stored["closed_us"][s], closed_us[m]]),
                         **{k: np.concatenate([stored[k][s].astype(v.dtype), v[m]]) for k, v in cols.items()}}
            links.append(_rebound_batch(batch_new, batch_old, radius=radius, window_us=window_us))
            del batch_new, batch_old
        return np.concatenate([a for a, _ in links]), np.concatenate([b for _, b in links])


def _count_batches(counts: np.ndarray) -> list[tuple[int, int]]:
    """Batches of consecutive whole problem types (``t`` from, to) by their numbers of rows ``counts``, up to
    :data:`REBOUND_BATCH_ROWS` each (one type larger than that is a batch of its own); types without rows are
    left out."""
    out, first, last, rows = [], None, -1, 0
    for i, c in enumerate(counts):
        if not c:
            continue
        if first is not None and rows + c > REBOUND_BATCH_ROWS:
            out.append((first, last))
            first, rows = None, 0
        if first is None:
            first = i
        last, rows = i, rows + int(c)
    if first is not None:
        out.append((first, last))
    return out


def _link_few(con: duckdb.DuckDBPyConnection, ids: np.ndarray, *, radius: float, window_us: int) -> int:
    """Link a few cases (a case opened by a user): two queries for the cases and the closures that can matter
    to them, whatever the size of the store, then the same search as in bulk."""
    if not ids.size:
        return 0
    id_list = ", ".join(str(int(i)) for i in ids)
    new = con.execute(f"""
        SELECT c.case_id, {kind_sql()} AS problem_type, c.site_id, epoch_us(c.found_at) AS found_us, e.lat, e.lng
        FROM cases c JOIN events e ON e.event_id = c.event_id
        WHERE c.case_id IN ({id_list}) AND e.event_id IN ({id_list})
          AND c.rebound_of IS NULL AND {kind_sql()} IS NOT NULL AND c.found_at IS NOT NULL""").df()
    if new.empty:
        return 0
    types = sorted(new["problem_type"].unique())
    old = closures(con, types, int(new["found_us"].min()) - window_us, int(new["found_us"].max()))
    code = {t: i for i, t in enumerate(types)}

    def points(frame: pd.DataFrame, time_col: str) -> dict[str, np.ndarray]:
        return {"case_id": frame["case_id"].to_numpy(np.int64),
                "t": frame["problem_type"].map(code).to_numpy(np.int32),
                "has_site": frame["site_id"].notna().to_numpy(),
                "site": frame["site_id"].fillna(0).to_numpy(np.int64),
                time_col: frame[time_col].to_numpy(np.int64),
                "lat": frame["lat"].astype(float).fillna(np.nan).to_numpy(float),
                "lng": frame["lng"].astype(float).fillna(np.nan).to_numpy(float)}

    case_id, old_id = _rebound_batch(points(new, "found_us"), points(old, "closed_us"), radius=radius,
                                     window_us=window_us)
    if not case_id.size:
        return 0
    try:
        _write_links(con, case_id, old_id)
    finally:
        for name in ("_reb", "_reb_ev"):
            con.execute(f"DROP TABLE IF EXISTS {name}")
    return int(case_id.size)


def closures(con: duckdb.DuckDBPyConnection, kinds, lo: int, hi: int) -> pd.DataFrame:
    """The closed cases of the rebound ``kinds`` (:func:`kind_sql`) closed in ``[lo, hi)`` (microseconds), with
    their points: ``case_id, event_id, problem_type`` (their kind), ``site_id, closed_us, lat, lng``. What a few
    new cases may repeat (:func:`link_rebounds` of a few, a case opened by a user): two or three small reads,
    whatever the size of the store."""
    old = con.execute(f"""
        SELECT case_id, event_id, problem_type, site_id, epoch_us(closed_at) AS closed_us FROM cases
        WHERE state = 'closed' AND problem_type IN ({', '.join(quote(str(k)) for k in kinds)})
          AND closed_at >= make_timestamp({int(lo)})
          AND closed_at < make_timestamp({int(hi)})""").df()  # literals: parameters cost a planning
    if has_labels(kinds):  # closed cases without a type, by their events' labels
        labels = [str(k)[len(LABEL_KIND):] for k in kinds if str(k).startswith(LABEL_KIND)]
        old = pd.concat([old, con.execute(f"""
            SELECT c.case_id, c.event_id, {kind_sql()} AS problem_type, c.site_id,
                   epoch_us(c.closed_at) AS closed_us
            FROM cases c JOIN events e ON e.event_id = c.event_id
            WHERE c.state = 'closed' AND c.problem_type IS NULL AND e.source_type IN (SELECT unnest(?::VARCHAR[]))
              AND c.closed_at >= make_timestamp(?) AND c.closed_at < make_timestamp(?)""",
            [labels, int(lo), int(hi)]).df()], ignore_index=True)
    if old.empty:
        old["lat"], old["lng"] = pd.Series(dtype=float), pd.Series(dtype=float)
        return old
    # their points by the events' own ids (not a join, which would read every event)
    points = con.execute(f"SELECT event_id, lat, lng FROM events WHERE event_id IN "
                         f"({', '.join(str(int(i)) for i in old['event_id'])})").df()
    return old.merge(points, on="event_id", how="left")


def _collect_cases(con: duckdb.DuckDBPyConnection, ranges: list[dict[str, int]], *, subset: str,
                   window_us: int) -> pd.DataFrame | None:
    """Fill the temp tables ``_reb_new`` (the cases to link), ``_reb_types`` (their problem types, numbered ``t``)
    and ``_reb_old`` (the closed cases that can matter to them); return the types with their counts of new
    cases, or None when there is nothing to link."""
    # In ranges of case ids, so that DuckDB's joins stay small at any number of cases.
    con.execute("CREATE OR REPLACE TEMP TABLE _reb_new (case_id BIGINT, problem_type VARCHAR, site_id BIGINT, "
                "found_us BIGINT, lat DOUBLE, lng DOUBLE)")
    for part in ranges:
        con.execute(f"""
            INSERT INTO _reb_new
            SELECT c.case_id, {kind_sql()}, c.site_id, epoch_us(c.found_at), e.lat, e.lng
            FROM cases c JOIN events e ON e.event_id = c.event_id
            WHERE c.case_id >= $lo AND c.case_id < $hi AND e.event_id BETWEEN $elo AND $ehi
              AND c.rebound_of IS NULL AND {kind_sql()} IS NOT NULL AND c.found_at IS NOT NULL {subset}
        """, part)
    con.execute("DROP TABLE IF EXISTS _link_ids")
    types = _new_types(con, window_us=window_us)
    if types is None:
        return None
    con.execute("CREATE OR REPLACE TEMP TABLE _reb_old (case_id BIGINT, problem_type VARCHAR, site_id BIGINT, "
                "closed_us BIGINT, lat DOUBLE, lng DOUBLE, t INTEGER)")
    # the closed cases of the new cases' types; those without a type by their labels, when a kind is a label
    joins = ["c.problem_type"] + ([f"CASE WHEN c.problem_type IS NULL THEN {kind_sql()} END"]
                                  if has_labels(types["problem_type"]) else [])
    for part, kind in itertools.product(ranges, joins):
        con.execute(f"""
            INSERT INTO _reb_old
            SELECT c.case_id, t.problem_type, c.site_id, epoch_us(c.closed_at), e.lat, e.lng, t.t
            FROM cases c JOIN events e ON e.event_id = c.event_id
            JOIN _reb_types t ON t.problem_type = {kind}
            WHERE c.case_id >= $lo AND c.case_id < $hi AND e.event_id BETWEEN $elo AND $ehi
              AND c.state = 'closed' AND c.closed_at IS NOT NULL
              AND epoch_us(c.closed_at) >= t.lo AND epoch_us(c.closed_at) < t.hi
        """, part)
    return types


def _new_types(con: duckdb.DuckDBPyConnection, *, window_us: int) -> pd.DataFrame | None:
    """The problem types of ``_reb_new`` numbered ``t``, with their counts of new cases and the window of the
    closures that can matter to them, ``[lo, hi)``: [first found - window, last found); also as the temp table
    ``_reb_types``, and each row of ``_reb_new`` gets its type's ``t``. None when ``_reb_new`` is empty."""
    types = con.execute("""
        SELECT problem_type, count(*) AS n, min(found_us) AS lo, max(found_us) AS hi
        FROM _reb_new GROUP BY problem_type ORDER BY problem_type
    """).df()
    if types.empty:
        return None
    types["t"] = np.arange(len(types), dtype=np.int32)
    types["lo"] = types["lo"] - window_us
    con.register("_reb_types_df", types[["problem_type", "t", "lo", "hi"]])
    con.execute("CREATE OR REPLACE TEMP TABLE _reb_types AS SELECT * FROM _reb_types_df")
    con.unregister("_reb_types_df")
    # numbered once: each batch then reads its rows by ``t`` (a join by type name per batch read them all)
    con.execute("CREATE OR REPLACE TEMP TABLE _reb_new AS SELECT x.*, t.t FROM _reb_new x "
                "JOIN _reb_types t ON t.problem_type = x.problem_type")
    return types


def _type_batches(con: duckdb.DuckDBPyConnection, types: pd.DataFrame) -> list[tuple[int, int]]:
    """Batches of consecutive whole problem types (``t`` from, to), up to :data:`REBOUND_BATCH_ROWS` new and
    closed cases each (one type larger than that is a batch of its own)."""
    counts = types.set_index("problem_type")["n"].add(
        con.execute("SELECT problem_type, count(*) AS n FROM _reb_old GROUP BY problem_type").df()
        .set_index("problem_type")["n"], fill_value=0).reindex(types["problem_type"]).to_numpy()
    batch = np.zeros(len(types), dtype=np.int64)
    rows = 0
    for i, c in enumerate(counts):  # consecutive whole types, up to REBOUND_BATCH_ROWS rows per batch
        if rows and rows + c > REBOUND_BATCH_ROWS:
            batch[i:] += 1
            rows = 0
        rows += c
    return [(int(types["t"][batch == b].min()), int(types["t"][batch == b].max()))
            for b in range(int(batch.max()) + 1)]


def _write_links(con: duckdb.DuckDBPyConnection, case_id: np.ndarray, old_id: np.ndarray) -> None:
    """Set ``rebound_of`` of cases ``case_id`` to ``old_id``, and of their events."""
    con.register("_reb_df", pd.DataFrame({"case_id": case_id, "old_id": old_id}))
    con.execute("CREATE OR REPLACE TEMP TABLE _reb AS SELECT * FROM _reb_df ORDER BY case_id")
    con.unregister("_reb_df")
    # a few links name their cases (so only the row groups holding them are read); many go by ranges
    few = f"AND cases.case_id IN ({', '.join(str(int(i)) for i in case_id)})" if len(case_id) <= FEW_CASES else ""
    con.execute(f"UPDATE cases SET rebound_of = r.old_id FROM _reb r WHERE cases.case_id = r.case_id {few}")
    # the events carry the link (only rebound_of changed: one column, not a full case sync), in ranges
    con.execute("CREATE OR REPLACE TEMP TABLE _reb_ev AS SELECT case_id AS event_id, old_id FROM _reb "
                "ORDER BY event_id")  # a case's id is its event's id
    few = few.replace("cases.case_id", "events.event_id")  # a case's id is its event's id
    for lo, hi in _id_ranges(con, "_reb_ev", "event_id"):
        con.execute(f"""
            UPDATE events SET rebound_of = r.old_id FROM _reb_ev r
            WHERE events.event_id >= $lo AND events.event_id < $hi AND r.event_id >= $lo AND r.event_id < $hi
              AND events.event_id = r.event_id AND events.rebound_of IS DISTINCT FROM r.old_id {few}
        """, {"lo": lo, "hi": hi})


def _case_id_ranges(con: duckdb.DuckDBPyConnection) -> list[dict[str, int]]:
    """Parts of about :data:`REBOUND_BATCH_ROWS` cases: ``[lo, hi)`` of their case ids and ``[elo, ehi]`` of
    their event ids (both bounds let DuckDB skip the rest of ``cases`` and ``events``)."""
    out = []
    for lo, hi in _id_ranges(con, "cases", "case_id"):
        elo, ehi = con.execute("SELECT min(event_id), max(event_id) FROM cases WHERE case_id >= ? AND case_id < ?",
                               [lo, hi]).fetchone()
        if elo is not None:
            out.append({"lo": lo, "hi": hi, "elo": int(elo), "ehi": int(ehi)})
    return out


def _id_ranges(con: duckdb.DuckDBPyConnection, table: str, column: str) -> list[tuple[int, int]]:
    """``[lo, hi)`` ranges of an id column splitting a table into parts of about :data:`REBOUND_BATCH_ROWS`."""
    lo, hi, n = con.execute(f"SELECT min({column}), max({column}), count(*) FROM {table}").fetchone()
    if not n:
        return []
    parts = max(1, -(-int(n) // REBOUND_BATCH_ROWS))
    inner = np.linspace(int(lo), int(hi) + 1, parts + 1)[1:-1].round().astype(np.int64).tolist()
    edges = sorted({int(lo), *inner, int(hi) + 1})
    return list(itertools.pairwise(edges))


def _fetch_points(con: duckdb.DuckDBPyConnection, table: str, time_col: str, tlo: int,
                  thi: int) -> dict[str, np.ndarray]:
    """Columns of the cases of types ``tlo..thi`` of a rebound temp table as numpy arrays."""
    got = con.execute(f"""
        SELECT case_id, t, site_id IS NOT NULL AS has_site, coalesce(site_id, 0) AS site,
               {time_col}, coalesce(lat, 'nan'::DOUBLE) AS lat, coalesce(lng, 'nan'::DOUBLE) AS lng
        FROM {table} WHERE t BETWEEN ? AND ?
    """, [tlo, thi]).fetchnumpy()
    return {k: np.asarray(v) for k, v in got.items()}
