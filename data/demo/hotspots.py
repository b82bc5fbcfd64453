"""Where the demo's problems arise: scatter anchors and place names around each site and in each grid, episodes."""

from __future__ import annotations

import numpy as np
import shapely
from civicgrid.data.demo.calendar import N_DAYS, START
from civicgrid.data.demo.city import density, points_in
from civicgrid.data.demo.frame import VILLAGES

#: Episodes an analyst can find: (kind, category, first day, last day, problem types, share of complaints).
EPISODES = [
    ("night_market", "29", "2025-06-01", "2025-09-30", {"0203": 4, "0201": 3, "0101": 2, "0301": 1}, 0.015),
    ("rectified", "30", "2024-01-01", "2024-06-15", {"0102": 3, "0204": 3, "0209": 2, "0407": 1}, 0.012),
    ("emerging", "36", "2025-03-01", "2025-12-31", {"0303": 3, "0301": 3, "0302": 1}, 0.010),
]
#: Scatter anchors per site.
_K_ANCHORS = 24


def _grid_of(polys, xy):
    """Index of the micro-grid containing each point (metres), -1 outside."""
    tree = shapely.STRtree(polys)
    pi, gi = tree.query(shapely.points(xy), predicate="intersects")
    out = np.full(len(xy), -1)
    out[pi[::-1]] = gi[::-1]
    return out


def site_model(rng, rows, city):
    """Per-site activity windows, heterogeneity, scatter anchors and place names; sets ``active`` in ``rows``.

    Returns
    -------
    dict
        ``cat`` (category of each site), ``a`` and ``b`` (first and past-last active day), ``het`` (risk
        heterogeneity), ``anchors`` and ``sigma`` (where problems scatter around a site), ``places`` (place names)
        and ``place_idx`` (the place of each anchor), ``episodes`` and ``street`` (street index of each site).
    """
    n = len(rows)
    K = _K_ANCHORS
    cat = np.array([r["category_code"] for r in rows])
    a = np.zeros(n, dtype=np.int64)
    b = np.full(n, N_DAYS, dtype=np.int64)
    for i, c in enumerate(cat):
        u = rng.random()
        if c == "38":  # construction sites come and go
            if u < 0.25:
                a[i] = rng.integers(90, 600)
            elif u < 0.45:
                b[i] = rng.integers(120, 540)
        elif c in ("13", "14", "15", "19", "20", "26", "27") and u < 0.04:
            b[i] = rng.integers(60, N_DAYS - 60)  # closed business
    for i, r in enumerate(rows):
        r["active"] = bool(b[i] >= N_DAYS - 30)
    het = rng.lognormal(0.0, 0.6, n)
    het[cat == "16"] = rng.lognormal(0.0, 0.9, int((cat == "16").sum()))
    # Bounded: a real city's worst market draws several times the hits of a typical one, not a fifth of all hits.
    het = np.clip(het, 0.25, 3.0)
    anchors = np.zeros((n, K, 2))
    sigma = np.zeros(n)
    places = [r["name"] for r in rows]
    place_idx = np.tile(np.arange(n)[:, None], (1, K))
    for i, r in enumerate(rows):
        g, c = r["geom"], r["category_code"]
        if g.geom_type == "Point":
            anchors[i] = [g.x, g.y]
            sigma[i] = {"05": 10, "07": 10, "14": 12, "31": 30, "09": 12}.get(c, 20)
        elif g.geom_type == "LineString":
            fr = (np.arange(K) + rng.random(K)) / K
            anchors[i] = shapely.get_coordinates(shapely.line_interpolate_point(g, fr, normalized=True))
            sigma[i] = 6 if c == "30" else 10
            if c in ("28", "29"):
                base = r["name"] if c == "28" else city["roads"][r["road"]]["name"]
                for k in range(K):
                    places.append(f"{base}{2 * int(fr[k] * g.length / 30) + 1 + (k % 2)}号附近")
                    place_idx[i, k] = len(places) - 1
        elif c == "25":
            anchors[i] = r["gates"][np.arange(K) % 2] + rng.normal(0, 30, (K, 2))
            sigma[i] = 8
        elif c in ("16", "38"):
            h = K // 2
            anchors[i, :h] = shapely.get_coordinates(
                shapely.line_interpolate_point(g.exterior, rng.random(h), normalized=True))
            anchors[i, h:] = points_in(g, K - h, rng)
            sigma[i] = 12 if c == "16" else 25
        else:
            anchors[i] = points_in(g, K, rng)
            sigma[i] = 20
    # Episodes: the sites they happen at.
    episodes = []
    for kind, c, d0, d1, profile, share in EPISODES:
        idx = np.flatnonzero(cat == c)
        if not len(idx):
            continue
        dens = density(anchors[idx, 0, 0], anchors[idx, 0, 1])
        site = int(idx[np.argsort(-dens)[rng.integers(0, min(3, len(idx)))]])
        episodes.append({"kind": kind, "site": site, "a": int((np.datetime64(d0) - START).astype(int)),
                         "b": int((np.datetime64(d1) - START).astype(int)) + 1, "profile": profile, "share": share})
        if kind == "night_market":
            rows[site]["name_episode"] = f"{rows[site]['name']}夜市"
            places.append(f"{rows[site]['name']}夜市")
            episodes[-1]["place"] = len(places) - 1
    street_of_site = city["street"][np.maximum(_grid_of(city["polys"], anchors[:, 0]), 0)]
    return {"cat": cat, "a": a, "b": b, "het": het, "anchors": anchors, "sigma": sigma, "places": places,
            "place_idx": place_idx, "episodes": episodes, "street": street_of_site}


def grid_model(rng, city, places):
    """Scatter anchors per micro-grid (for complaints spread by households) and just outside the city.

    Appends the anchors' place names to ``places``; returns ``anchors`` and ``place_idx`` per grid, and
    ``out_xy`` and ``out_place`` for points just outside the city.
    """
    polys = city["polys"]
    K = 64
    anchors = np.stack([points_in(p, K, rng) for p in polys])
    flat = anchors.reshape(-1, 2)
    road_geoms = np.array([r["geom"] for r in city["roads"]], dtype=object)
    pts = shapely.points(flat)
    near = shapely.STRtree(road_geoms).query_nearest(pts, all_matches=False)[1]
    dist = shapely.distance(road_geoms[near], pts)
    proj = shapely.line_locate_point(road_geoms[near], pts)
    start = len(places)
    for j, (r, p, d) in enumerate(zip(near, proj, dist, strict=True)):
        name = city["roads"][r]["name"]
        places.append(f"{name}{2 * int(p / 30) + 1 + (j % 2)}号" + ("附近" if d > 60 else ""))
    place_idx = start + np.arange(len(flat)).reshape(len(polys), K)
    ring = city["boundary"].buffer(600).difference(city["boundary"].buffer(40))
    out_xy = points_in(ring, 2000, rng)
    ang = np.degrees(np.arctan2(out_xy[:, 1], out_xy[:, 0])) % 360
    vstart = len(places)
    places.extend(f"{v}村" for v in VILLAGES)
    out_place = vstart + (ang // (360 / len(VILLAGES))).astype(int)
    return {"anchors": anchors, "place_idx": place_idx, "out_xy": out_xy, "out_place": out_place}
