"""The demo city's street network: the arterials and secondary roads of :mod:`~civicgrid.data.demo.city`, local
streets filling the blocks between them, back alleys inside the micro-grids, and one entrance lane per site.

The network is generated after the sites, from its own random stream (``seed`` and :data:`STREETS_STREAM`), so
the rest of the demo city is the same row for row with or without it. Everything is built in local metres and
noded (every crossing is a shared vertex), small pieces cut off from the main network are dropped, and each site
gets an ``entrance`` lane from its point to the nearest street of the main network: every site is reachable.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import shapely
from civicgrid.data.demo.city import ALLEY_NAMES, density
from scipy import sparse
from scipy.sparse import csgraph

#: Second element of the street generator's seed ``[seed, STREETS_STREAM]`` (a stream of its own).
STREETS_STREAM = 15

#: Spacing of the local street lattice, metres, where the city is densest and at its edge (blocks of
#: 130-250 m are typical of Chinese city centres and of newer districts).
LOCAL_SPACING_M = (140.0, 240.0)

#: Road kinds, most important first (``roads.kind``); alleys are closed to cars (背街小巷: walk and bike).
ROAD_KINDS = ("arterial", "secondary", "local", "alley", "entrance")

_NUMERALS = "一二三四五六七八九"


def _stem(name: str) -> str:
    return name[:-2] if name.endswith("大道") else name[:-1] if name[-1] in "路街巷里" else name


def _wiggle(p0, p1, rng, *, step=60.0, sigma=2.5):
    """A gently irregular segment from p0 to p1 (both ends kept exactly)."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    n = max(2, int(np.linalg.norm(p1 - p0) / step) + 1)
    t = np.linspace(0, 1, n)
    pts = p0 + t[:, None] * (p1 - p0)
    if n > 2:
        d = (p1 - p0) / np.linalg.norm(p1 - p0)
        pts[1:-1] += rng.normal(0, sigma, n - 2)[:, None] * np.array([-d[1], d[0]])
    return shapely.LineString(pts)


def _lattice(rng, boundary, major, blocked):
    """Local streets: a jittered lattice, denser where more people live, cut at every lattice crossing; pieces
    running along a main road, inside a site's area or outside the city are dropped."""
    minx, miny, maxx, maxy = boundary.bounds
    lo, hi = LOCAL_SPACING_M

    def lines(a, b):
        out, p = [], a
        while p < b:
            out.append(p)
            p += lo + (hi - lo) * rng.random() ** 0.7
        return np.array(out)

    xs, ys = lines(minx, maxx), lines(miny, maxy)
    pieces = []
    for axis, pos, cross in (("ns", xs, ys), ("ew", ys, xs)):
        for c in pos:
            shift = rng.normal(0, 12)
            for a, b in pairwise(cross):
                if axis == "ns":
                    p0, p1 = (c + shift, a), (c + shift, b)
                else:
                    p0, p1 = (a, c + shift), (b, c + shift)
                mid = (np.asarray(p0) + np.asarray(p1)) / 2
                dens = density(mid[:1], mid[1:])[0]
                keep = 0.45 + 0.45 * min(dens / 1.0, 1.0)     # 90 % of pieces in the centre, ~50 % at the edge
                if rng.random() < keep:
                    pieces.append(_wiggle(p0, p1, rng))
    geoms = np.asarray(pieces, dtype=object)
    geoms = geoms[_share_within(geoms, shapely.buffer(major, 30, quad_segs=2)) <= 0.6]
    geoms = _clip(geoms, boundary, inside=True)
    geoms = _clip(geoms, blocked, inside=False)
    return [g for g in _parts(geoms) if g.length > 25]


def _polygons(area) -> np.ndarray:
    if isinstance(area, np.ndarray):
        return area
    return np.asarray(list(area.geoms) if hasattr(area, "geoms") else [area], dtype=object)


def _share_within(lines, area) -> np.ndarray:
    """Share of each line's length inside an area (STRtree over the area's parts: a large union is slow)."""
    parts = _polygons(area)
    tree = shapely.STRtree(parts)
    li, pi = tree.query(lines, predicate="intersects")
    inside = np.zeros(len(lines))
    np.add.at(inside, li, shapely.length(shapely.intersection(lines[li], parts[pi])))
    return inside / np.maximum(shapely.length(lines), 1e-9)


def _clip(lines, area, *, inside: bool) -> np.ndarray:
    """The lines cut to the inside (or outside) of an area, computed only where they meet its parts."""
    parts = _polygons(area)
    tree = shapely.STRtree(parts)
    li, pi = tree.query(lines, predicate="intersects")
    out = np.asarray(lines, dtype=object).copy()
    if not inside:
        for i in np.unique(li):
            out[i] = shapely.difference(out[i], shapely.union_all(parts[pi[li == i]]))
        return out
    keep = np.zeros(len(lines), dtype=bool)
    keep[li] = True
    for i in np.unique(li):
        out[i] = shapely.intersection(out[i], shapely.union_all(parts[pi[li == i]]))
    return out[keep]


def _parts(geoms):
    out = []
    for g in np.atleast_1d(geoms):
        if g is None or g.is_empty:
            continue
        out.extend(g.geoms if hasattr(g, "geoms") else [g])
    return [g for g in out if g.geom_type == "LineString"]


def _alleys(rng, city, streets, blocked, names):
    """Back alleys: the city's own alleys joined to the nearest street, and dead-end lanes into the blocks of
    the denser micro-grids (one to three per grid)."""
    tree = shapely.STRtree(np.asarray(streets, dtype=object))
    out = []
    for r in city["roads"]:
        if r["kind"] != "alley":
            continue
        g = r["geom"]
        start = shapely.Point(g.coords[0])
        near = streets[int(tree.query_nearest(start)[0])]
        p = near.interpolate(near.project(start))
        link = _through(np.array(p.coords[0]), np.array(start.coords[0]))
        out.append((r["name"], shapely.LineString([*link.coords, *g.coords[1:]])))
    polys = city["polys"]
    dens = density(*shapely.get_coordinates(shapely.centroid(polys)).T)
    for i, poly in enumerate(polys):
        n = int(rng.poisson(0.6 + 1.6 * min(dens[i], 1.0)))
        inner = poly.buffer(-20, quad_segs=2)
        if inner.is_empty:
            continue
        for _ in range(min(n, 3)):
            x0, y0, x1, y1 = inner.bounds
            q = np.array([rng.uniform(x0, x1), rng.uniform(y0, y1)])
            if not inner.contains(shapely.Point(q)) or blocked.contains(shapely.Point(q)):
                continue
            near = streets[int(tree.query_nearest(shapely.Point(q))[0])]
            p = np.array(near.interpolate(near.project(shapely.Point(q))).coords[0])
            d = np.linalg.norm(q - p)
            if not 40 < d < 220:
                continue
            bend = q + rng.normal(0, 0.25 * d, 2)
            lane = shapely.LineString([*_through(p, bend).coords, q])
            if not blocked.intersects(lane) and poly.contains(shapely.Point(q)):
                out.append((names[len(out) % len(names)], lane))
    return out


def _through(p, q, overshoot=0.5):
    """Segment from just beyond p (on a street) to q, so that noding makes the crossing with the street a vertex."""
    d = (q - p) / max(np.linalg.norm(q - p), 1e-9)
    return shapely.LineString([p - d * overshoot, q])


def _node(lines, kinds, names, site_ids):
    """Node the lines (split at every crossing), giving each piece the kind, name and site of its source line."""
    noded = _parts(shapely.union_all(np.asarray(lines, dtype=object), grid_size=0.01))
    mids = shapely.line_interpolate_point(np.asarray(noded, dtype=object), 0.5, normalized=True)
    tree = shapely.STRtree(np.asarray(lines, dtype=object))
    seg, src = tree.query(mids, predicate="dwithin", distance=0.05)
    rank = np.array([ROAD_KINDS.index(k) for k in kinds])
    best = np.full(len(noded), -1)
    for s, j in zip(seg, src, strict=True):   # the most important kind wins where two lines overlap
        if best[s] < 0 or rank[j] < rank[best[s]]:
            best[s] = j
    keep = best >= 0
    return [(noded[i], kinds[best[i]], names[best[i]], site_ids[best[i]]) for i in np.flatnonzero(keep)]


def _graph(pieces):
    """Node indices of each piece's ends and the connected component of every piece."""
    geoms = np.asarray([g for g, *_ in pieces], dtype=object)
    ends = np.stack([shapely.get_coordinates(shapely.get_point(geoms, 0)),
                     shapely.get_coordinates(shapely.get_point(geoms, -1))], axis=1)
    key = np.round(ends.reshape(-1, 2), 3)
    _, inv = np.unique(key, axis=0, return_inverse=True)
    inv = inv.ravel().reshape(-1, 2)
    n = inv.max() + 1
    g = sparse.coo_matrix((np.ones(len(inv)), (inv[:, 0], inv[:, 1])), shape=(n, n))
    _, labels = csgraph.connected_components(g, directed=False)
    return inv, labels


def _main_component(pieces):
    """The pieces of the largest connected part of the network, without dangling overshoot stubs (< 1 m)."""
    while True:
        inv, labels = _graph(pieces)
        comp = labels[inv[:, 0]]
        lengths = shapely.length(np.asarray([g for g, *_ in pieces], dtype=object))
        length = np.bincount(comp, weights=lengths)
        degree = np.bincount(inv.ravel(), minlength=labels.size)
        stub = (lengths < 1.0) & ((degree[inv[:, 0]] == 1) | (degree[inv[:, 1]] == 1))
        keep = (comp == length.argmax()) & ~stub
        if keep.all():
            return pieces
        pieces = [p for p, k in zip(pieces, keep, strict=True) if k]


def build_streets(city, site_xy, site_ids, site_areas, *, seed: int):
    """The street network of the demo city, in local metres.

    Parameters
    ----------
    city : dict
        :func:`civicgrid.data.demo.city.build_city`.
    site_xy : numpy.ndarray
        (n, 2) the sites' points (their stored ``lng``/``lat``) in local metres.
    site_ids : sequence of int
        The sites' ids.
    site_areas : sequence of shapely.Polygon
        The sites' areas (parks, markets, campuses, ...): local streets and alleys do not cross them.
    seed : int
        The demo's seed; the network uses ``[seed, STREETS_STREAM]``.

    Returns
    -------
    list of tuple
        ``(geometry, kind, name, site_id)`` per piece between crossings; ``kind`` one of :data:`ROAD_KINDS`,
        ``site_id`` set for entrances. The pieces form one connected network reaching every site.
    """
    rng = np.random.default_rng([int(seed), STREETS_STREAM])
    boundary = city["boundary"]
    mains = [r for r in city["roads"] if r["kind"] in ("arterial", "secondary")]
    major = np.asarray([r["geom"] for r in mains], dtype=object)
    blocked = shapely.union_all(shapely.buffer(np.asarray(site_areas, dtype=object), 4, quad_segs=2)) \
        if len(site_areas) else shapely.Polygon()
    local = _lattice(rng, boundary, major, blocked)
    lines = [r["geom"] for r in mains] + local
    kinds = [r["kind"] for r in mains] + ["local"] * len(local)
    # a local street is named after the main road it leaves from: 人民路三支路
    tree = shapely.STRtree(np.asarray([r["geom"] for r in mains], dtype=object))
    count: dict[str, int] = {}
    names = [r["name"] for r in mains]
    for g in local:
        road = mains[int(tree.query_nearest(shapely.Point(g.coords[0]))[0])]["name"]
        count[road] = count.get(road, 0) + 1
        k = count[road]
        names.append(f"{_stem(road)}{_NUMERALS[(k - 1) % 9]}支路" if k <= 9 else f"{_stem(road)}{k}号支路")
    alley_names = [n for n in rng.permutation(ALLEY_NAMES)]
    alleys = _alleys(rng, city, lines, blocked, alley_names)
    lines += [g for _, g in alleys]
    kinds += ["alley"] * len(alleys)
    names += [n for n, _ in alleys]
    pieces = _main_component(_node(lines, kinds, names, [None] * len(lines)))
    # entrances: from each site's point to the nearest street of the main network
    streets = np.asarray([g for g, *_ in pieces], dtype=object)
    tree = shapely.STRtree(streets)
    pts = shapely.points(site_xy)
    nearest = tree.query_nearest(pts, all_matches=False)[1]
    entrances, e_names, e_ids = [], [], []
    for k, j in enumerate(nearest):
        q = np.asarray(site_xy[k], float)
        p = np.array(streets[j].interpolate(streets[j].project(pts[k])).coords[0])
        if np.linalg.norm(q - p) < 0.5:   # on the street: a crossing stub (dropped below) splits it there
            t = np.array(streets[j].interpolate(streets[j].project(pts[k]) + 1.0).coords[0]) - p
            t = np.array([-t[1], t[0]]) / max(np.linalg.norm(t), 1e-9)
            entrances.append(shapely.LineString([p - 0.4 * t, p + 0.4 * t]))
        else:
            entrances.append(_through(p, q))
        e_names.append(pieces[j][2])
        e_ids.append(int(site_ids[k]))
    lines = [g for g, *_ in pieces] + entrances
    kinds = [k for _, k, *_ in pieces] + ["entrance"] * len(entrances)
    names = [n for _, _, n, _ in pieces] + e_names
    ids = [None] * len(pieces) + e_ids
    return _main_component(_node(lines, kinds, names, ids))
