"""The demo city's street network (table ``roads``): connected, reaching every site, and the travel times patrols
take from it checked against an independent shortest path (networkx on the stored geometries)."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import shapely

R = 6_371_008.8  # mean Earth radius (m), as geo.distance


def _haversine(lng1, lat1, lng2, lat2):
    p1, p2 = np.radians(lat1), np.radians(lat2)
    a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(np.radians(lng2 - lng1) / 2) ** 2
    return 2 * R * np.arcsin(np.sqrt(a))


@pytest.fixture(scope="module")
def roads(demo_db: Path):
    from civicgrid.geo.store import Store

    store = Store(demo_db)
    frame = store.sql("SELECT road_id, kind, name, site_id, length_m, ST_AsWKB(geom) AS wkb FROM roads")
    frame["geom"] = shapely.from_wkb([bytes(b) for b in frame.pop("wkb")])
    sites = store.sql("SELECT site_id, lng, lat, geom IS NOT NULL AS has_geom FROM sites ORDER BY site_id")
    return store, frame, sites


def _graph(frame, *, skip=()) -> nx.Graph:
    """An undirected graph of the stored lines: vertices rounded to 1e-7° are one node, edges weighted by their
    great-circle length (computed here, not by civicgrid)."""
    g = nx.Graph()
    for geom, kind in zip(frame["geom"], frame["kind"], strict=True):
        if kind in skip:
            continue
        c = np.round(shapely.get_coordinates(geom) / 1e-7).astype(np.int64)
        for (x1, y1), (x2, y2) in pairwise(c):
            if (x1, y1) == (x2, y2):
                continue
            w = float(_haversine(x1 * 1e-7, y1 * 1e-7, x2 * 1e-7, y2 * 1e-7))
            a, b = (int(x1), int(y1)), (int(x2), int(y2))
            if not g.has_edge(a, b) or g[a][b]["w"] > w:
                g.add_edge(a, b, w=w)
    return g


def test_demo_streets_form_one_network_with_every_kind(roads) -> None:
    _, frame, sites = roads
    km = frame.groupby("kind")["length_m"].sum() / 1000
    # arterials and secondary roads of the city, a local street lattice, alleys inside grids and site entrances
    assert set(km.index) == {"arterial", "secondary", "local", "alley", "entrance"}
    assert km["local"] > km["arterial"] > 50 and km["alley"] > 10
    # stored lengths are the pieces' lengths (local metres, a few mm from the great circle)
    ll = np.array([float(_haversine(*shapely.get_coordinates(g)[:-1].T, *shapely.get_coordinates(g)[1:].T).sum())
                   for g in frame["geom"]])
    assert np.abs(ll - frame["length_m"]).max() < 0.01 * frame["length_m"].max()
    g = _graph(frame)
    assert nx.is_connected(g)
    # a city of ~12 x 10 km: over 700 km of streets, blocks of a few hundred metres
    assert 600 < frame["length_m"].sum() / 1000 < 1200
    # every entrance leads to a site, at most one entrance lane per site and street (pieces split at crossings)
    assert set(frame["site_id"].dropna().astype(int)) <= set(sites["site_id"])
    assert frame.loc[frame["kind"] == "entrance", "site_id"].notna().all()


def test_every_site_is_a_node_of_the_network(roads) -> None:
    _, frame, sites = roads
    g = _graph(frame)
    nodes = np.array(list(g.nodes), dtype=float) * 1e-7
    from scipy.spatial import cKDTree

    lat0 = np.radians(28.23)
    tree = cKDTree(np.column_stack([nodes[:, 0] * np.cos(lat0), nodes[:, 1]]))
    d, _ = tree.query(np.column_stack([sites["lng"] * np.cos(lat0), sites["lat"]]))
    metres = d * np.pi / 180 * R
    # each site's point is on the network (its entrance lane ends there, or it lies on a street): within 1 m
    assert metres.max() < 1.0, np.sort(metres)[-5:]


def test_network_travel_times_match_networkx_and_exceed_the_straight_line(roads) -> None:
    from civicgrid.sites.patrol.network import SPEEDS_KMH, store_network

    store, frame, sites = roads
    net = store_network(store)
    assert net.source == "road network: roads table"
    rng = np.random.default_rng(3)
    pick = sites.iloc[np.sort(rng.choice(len(sites), 25, replace=False))]
    lng, lat = pick["lng"].to_numpy(), pick["lat"].to_numpy()
    minutes = net.travel_minutes(lng, lat, mode="walk")
    assert net.last_report.fallback_pairs == 0 and net.last_report.far_points == 0
    # independent: networkx Dijkstra on the stored geometries, from each site's nearest node (brute force)
    g = _graph(frame)
    nodes = list(g.nodes)
    xy = np.array(nodes, dtype=float) * 1e-7
    near = [nodes[int(np.argmin(_haversine(x, y, xy[:, 0], xy[:, 1])))] for x, y in zip(lng, lat, strict=True)]
    snap = np.array([_haversine(x, y, n[0] * 1e-7, n[1] * 1e-7) for (x, y), n in zip(zip(lng, lat, strict=True),
                                                                                        near, strict=True)])
    metres = np.zeros((len(near), len(near)))
    for i, a in enumerate(near):
        dist = nx.single_source_dijkstra_path_length(g, a, weight="w")
        metres[i] = [dist[b] for b in near]
    metres += snap[:, None] + snap[None, :]
    np.fill_diagonal(metres, 0)
    expect = metres / (SPEEDS_KMH["walk"] * 1000 / 60)
    assert minutes == pytest.approx(expect, rel=1e-6, abs=1e-6)
    straight = _haversine(lng[:, None], lat[:, None], lng[None, :], lat[None, :]) / (SPEEDS_KMH["walk"] * 1000 / 60)
    off = ~np.eye(len(lng), dtype=bool)
    assert (minutes[off] >= straight[off] - 1e-9).all()
    # circuity of a plausible city street network (measured cities: 1.2-1.4 on average)
    ratio = np.median(minutes[off] / straight[off])
    assert 1.1 < ratio < 1.6, ratio


def test_cars_do_not_use_alleys_and_paths_follow_the_streets(roads) -> None:
    from civicgrid.sites.patrol.network import store_network

    store, frame, sites = roads
    net = store_network(store)
    car = net.graph_for("car")
    walk = net.graph_for("walk")
    alley_km = frame.loc[frame["kind"] == "alley", "length_m"].sum() / 1000
    # each undirected piece appears twice in the walking graph; cars miss exactly the alleys' edges
    assert walk.sum() / 2000 - car.sum() / 2000 == pytest.approx(alley_km, rel=0.01)
    a, b = sites.iloc[10], sites.iloc[700]
    path = np.array(net.path_lnglat([a["lng"], b["lng"]], [a["lat"], b["lat"]], mode="walk"))
    assert path[0] == pytest.approx([a["lng"], a["lat"]]) and path[-1] == pytest.approx([b["lng"], b["lat"]])
    length = _haversine(path[:-1, 0], path[:-1, 1], path[1:, 0], path[1:, 1]).sum()
    minutes = net.travel_minutes(np.array([a["lng"], b["lng"]]), np.array([a["lat"], b["lat"]]), mode="walk")[0, 1]
    # the drawn path is the route the travel time was measured on
    assert length / (4.5 * 1000 / 60) == pytest.approx(minutes, rel=1e-6)
