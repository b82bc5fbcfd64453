"""Road networks and travel times for patrols."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import numpy as np
from civicgrid.geo.distance import EARTH_RADIUS_M, haversine_m
from civicgrid.geo.errors import InvalidParameterError
from scipy import sparse
from scipy.sparse import csgraph
from scipy.spatial import cKDTree

#: Average door-to-door speeds in a Chinese city centre, km/h. These are planning assumptions, not measurements:
#: walk 4.5 km/h is the usual 1.3-1.4 m/s free walking speed (5 km/h, the OSMnx/OpenTripPlanner default) slowed by
#: signalised crossings; bike 12 km/h is urban cycling including stops (free-flow commuter cycling is ~15-18 km/h);
#: car 25 km/h is a daytime average in congested central districts (Amap/Gaode city traffic reports put Shenzhen
#: peak-hour speeds in the mid-20s km/h). Override per call with ``speed_kmh=`` when local figures are known.
SPEEDS_KMH: dict[str, float] = {"walk": 4.5, "bike": 12.0, "car": 25.0}

#: Straight-line to network distance ratio (route circuity). Urban road networks typically measure 1.2-1.4
#: (e.g. Ballou, Rahardja & Sakai 2002; Giacomin & Levinson 2015, "Road network circuity in metropolitan areas");
#: 1.3 is an assumption, not calibrated for any one city.
DETOUR_FACTOR: float = 1.3

#: Points farther than this from every node of a road network are treated as off the network: their travel
#: times use straight line × detour (a network that does not cover a point says nothing about reaching it).
MAX_SNAP_M: float = 500.0

#: OSM highway values that are never routable (not built, not a road, or not a way to travel along).
NON_ROUTABLE = frozenset({
    "proposed", "construction", "abandoned", "disused", "razed", "planned", "platform", "raceway", "bus_stop",
    "elevator", "escalator", "rest_area", "services", "emergency_bay", "via_ferrata", "bus_guideway", "no",
})

#: OSM highway values open to walkers and cyclists only (not to cars).
NON_DRIVABLE = frozenset({
    "footway", "path", "pedestrian", "steps", "cycleway", "bridleway", "track", "corridor", "trail", "crossing",
    "sidewalk", "busway",
})

#: ``service=*`` values excluded from car routing (as in OSMnx's ``drive`` network).
NON_DRIVABLE_SERVICE = frozenset({"parking", "parking_aisle", "driveway", "private", "emergency_access"})

ONEWAY_YES = frozenset({"yes", "true", "1"})
ONEWAY_REVERSE = frozenset({"-1", "reverse"})


def _check_mode(mode: str) -> float:
    if mode not in SPEEDS_KMH:
        msg = f"unknown mode {mode!r}; expected one of {sorted(SPEEDS_KMH)}"
        raise InvalidParameterError(msg)
    return SPEEDS_KMH[mode]


def straight_line_minutes(lng: np.ndarray, lat: np.ndarray, *, mode: str = "walk",
                          detour: float = DETOUR_FACTOR, speed_kmh: float | None = None) -> np.ndarray:
    """Travel minutes between all pairs of points along the straight line times a detour factor.

    Parameters
    ----------
    lng, lat
        WGS84 coordinates of the n points.
    mode
        ``walk``, ``bike`` or ``car`` (speed from :data:`SPEEDS_KMH`).
    detour
        Network-to-straight-line distance ratio, :data:`DETOUR_FACTOR` by default.
    speed_kmh
        Override the speed of the mode.

    Returns
    -------
    numpy.ndarray
        n × n matrix of minutes, zero on the diagonal.
    """
    speed = speed_kmh if speed_kmh is not None else _check_mode(mode)
    lng = np.asarray(lng, dtype="float64")
    lat = np.asarray(lat, dtype="float64")
    if lng.shape != lat.shape or lng.ndim != 1:
        msg = "lng and lat must be 1-D arrays of the same length"
        raise InvalidParameterError(msg)
    d = haversine_m(lng[:, None], lat[:, None], lng[None, :], lat[None, :])
    return d * detour / (speed * 1000.0 / 60.0)


@dataclass
class TravelReport:
    """What the last :meth:`RoadNetwork.travel_minutes` call did: snapping distances and fallbacks."""

    mode: str
    snap_m: np.ndarray
    fallback_pairs: int
    far_points: int
    detour: float = DETOUR_FACTOR
    max_snap_m: float = MAX_SNAP_M

    def __str__(self) -> str:
        return (f"{self.mode}: snapped {len(self.snap_m)} points (median {np.median(self.snap_m):.0f} m, "
                f"max {self.snap_m.max():.0f} m); {self.far_points} points more than {self.max_snap_m:g} m from "
                f"the network and {self.fallback_pairs} pairs in all used straight line × {self.detour:g}")


@dataclass
class RoadNetwork:
    """A road network: nodes in WGS84 and edges with lengths in metres.

    Attributes
    ----------
    lng, lat
        Node coordinates.
    u, v, length_m
        Edges from node ``u`` to node ``v`` (indices into the node arrays).
    oneway
        Edge may only be driven from ``u`` to ``v`` (walkers and cyclists use it both ways).
    drivable
        Edge is open to cars.
    source
        ``"road network: <file name>"``, used as a plan's ``travel_source``.
    """

    lng: np.ndarray
    lat: np.ndarray
    u: np.ndarray
    v: np.ndarray
    length_m: np.ndarray
    oneway: np.ndarray
    drivable: np.ndarray
    source: str = "road network"
    last_report: TravelReport | None = None
    _graphs: dict = field(default_factory=dict, repr=False)
    _trees: dict = field(default_factory=dict, repr=False)

    @property
    def n_nodes(self) -> int:
        """Number of nodes."""
        return len(self.lng)

    @property
    def n_edges(self) -> int:
        """Number of edges as loaded (a two-way road loaded from a directed graph counts twice)."""
        return len(self.u)

    @property
    def graph(self) -> sparse.csr_matrix:
        """The walking graph: all routable edges, both directions (scipy CSR matrix of metres)."""
        return self.graph_for("walk")

    def graph_for(self, mode: str) -> sparse.csr_matrix:
        """Sparse graph (metres) for a travel mode.

        Walkers and cyclists use every routable edge in both directions; cars use drivable edges and
        respect ``oneway``.
        """
        _check_mode(mode)
        key = "car" if mode == "car" else "walk"
        if key not in self._graphs:
            if key == "car":
                keep = self.drivable
                u, v, w = self.u[keep], self.v[keep], self.length_m[keep]
                two = ~self.oneway[keep]
                u, v, w = np.r_[u, v[two]], np.r_[v, u[two]], np.r_[w, w[two]]
            else:
                u, v, w = np.r_[self.u, self.v], np.r_[self.v, self.u], np.r_[self.length_m, self.length_m]
            # keep the shortest of parallel edges (a CSR matrix would sum them); explicit zeros are no edge
            order = np.lexsort((w, v, u))
            u, v, w = u[order], v[order], w[order]
            first = np.r_[True, (u[1:] != u[:-1]) | (v[1:] != v[:-1])]
            w = np.maximum(w[first], 1e-3)
            n = self.n_nodes
            self._graphs[key] = sparse.csr_matrix((w, (u[first], v[first])), shape=(n, n))
        return self._graphs[key]

    def routable_nodes(self, mode: str = "walk") -> np.ndarray:
        """Indices of the nodes in the largest connected component of the graph for ``mode``.

        Cars use the largest strongly connected component (one-way streets), walkers and cyclists the largest
        connected component of the undirected graph.
        """
        g = self.graph_for(mode)
        _, labels = csgraph.connected_components(g, directed=True, connection="strong")
        has_edge = np.zeros(self.n_nodes, dtype=bool)
        has_edge[g.tocoo().row] = True
        counts = np.bincount(labels[has_edge], minlength=labels.max() + 1)
        return np.flatnonzero(labels == counts.argmax())

    def _xy(self, lng: np.ndarray, lat: np.ndarray) -> np.ndarray:
        lat0 = np.radians(np.nanmean(self.lat))
        return np.column_stack([np.radians(lng) * np.cos(lat0) * EARTH_RADIUS_M, np.radians(lat) * EARTH_RADIUS_M])

    def nearest_nodes(self, lng: np.ndarray, lat: np.ndarray, *, mode: str = "walk"
                      ) -> tuple[np.ndarray, np.ndarray]:
        """Nearest network node of each point.

        Parameters
        ----------
        lng, lat
            WGS84 coordinates.
        mode
            Travel mode: points snap to the largest connected part of that mode's graph (strongly connected
            for cars, so that every snapped pair has a route both ways).

        Returns
        -------
        nodes, distance_m
            Node indices and great-circle snapping distances in metres.
        """
        lng = np.atleast_1d(np.asarray(lng, dtype="float64"))
        lat = np.atleast_1d(np.asarray(lat, dtype="float64"))
        key = "car" if mode == "car" else "walk"
        if key not in self._trees:
            idx = self.routable_nodes(key)
            self._trees[key] = (idx, cKDTree(self._xy(self.lng[idx], self.lat[idx])))
        idx, tree = self._trees[key]
        _, j = tree.query(self._xy(lng, lat))
        nodes = idx[j]
        return nodes, haversine_m(lng, lat, self.lng[nodes], self.lat[nodes])

    def travel_minutes(self, lng: np.ndarray, lat: np.ndarray, *, mode: str = "walk",
                       speed_kmh: float | None = None, detour: float = DETOUR_FACTOR,
                       max_snap_m: float = MAX_SNAP_M) -> np.ndarray:
        """Network travel minutes between all pairs of points.

        Each point is snapped to its nearest node of the mode's graph; the snapping distance is added at both
        ends at the same speed. Two points snapped to the same node are at most straight line × ``detour`` apart
        (identical points: 0). Pairs with no network path, and every pair involving a point more than
        ``max_snap_m`` from the network, use straight line × ``detour`` instead; :attr:`last_report` counts them.

        Parameters
        ----------
        lng, lat
            WGS84 coordinates of the n points.
        mode
            ``walk``, ``bike`` or ``car``.
        speed_kmh
            Override the speed of the mode.
        detour
            Detour factor for the straight-line fallback.
        max_snap_m
            Points farther than this from every node are off the network.

        Returns
        -------
        numpy.ndarray
            n × n matrix of minutes, zero on the diagonal.

        Raises
        ------
        InvalidParameterError
            When no point is within ``max_snap_m`` of the network (the file covers another place).
        """
        speed = speed_kmh if speed_kmh is not None else _check_mode(mode)
        _check_mode(mode)
        lng = np.asarray(lng, dtype="float64")
        lat = np.asarray(lat, dtype="float64")
        if lng.shape != lat.shape or lng.ndim != 1:
            msg = "lng and lat must be 1-D arrays of the same length"
            raise InvalidParameterError(msg)
        nodes, snap = self.nearest_nodes(lng, lat, mode=mode)
        far = snap > max_snap_m
        if len(lng) and far.all():
            msg = (f"{self.source} does not cover the points: the nearest is {snap.min() / 1000:.1f} km from it "
                   f"(network extent lng {self.lng.min():.3f}..{self.lng.max():.3f}, lat {self.lat.min():.3f}.."
                   f"{self.lat.max():.3f}); use a network of this city or none (straight line × {detour:g})")
            raise InvalidParameterError(msg)
        uniq, inv = np.unique(nodes[~far], return_inverse=True)
        metres = np.full((len(lng), len(lng)), np.inf)
        if len(uniq):
            dist = csgraph.dijkstra(self.graph_for(mode), directed=True, indices=uniq)[:, uniq]
            near = np.flatnonzero(~far)
            metres[np.ix_(near, near)] = dist[inv][:, inv] + snap[near, None] + snap[None, near]
            # points snapped to one node: the network says nothing about the way between them, and going to the
            # node and back would put two sites of one building (or a start equal to the end) minutes apart
            ia, ib = np.nonzero(inv[:, None] == inv[None, :])
            if len(ia) > len(near):
                a, b = near[ia], near[ib]
                direct = haversine_m(lng[a], lat[a], lng[b], lat[b]) * detour
                metres[a, b] = np.minimum(metres[a, b], direct)
        bad = ~np.isfinite(metres)
        np.fill_diagonal(bad, False)
        if bad.any():
            straight = haversine_m(lng[:, None], lat[:, None], lng[None, :], lat[None, :]) * detour
            metres[bad] = straight[bad]
        np.fill_diagonal(metres, 0.0)
        n_bad = int(bad.sum())
        unconnected = int(bad[np.ix_(~far, ~far)].sum())
        self.last_report = TravelReport(mode=mode, snap_m=snap, fallback_pairs=n_bad, far_points=int(far.sum()),
                                        detour=detour, max_snap_m=max_snap_m)
        if unconnected:
            warnings.warn(f"{unconnected} of {bad.size} point pairs are not connected on the {mode} network "
                          f"({self.source}); used straight line × {detour}", stacklevel=2)
        return metres / (speed * 1000.0 / 60.0)


    def path_lnglat(self, lng, lat, *, mode: str = "walk") -> list[list[float]]:
        """The network path through points in order (start, stops, end) as ``[[lng, lat], ...]``.

        Each point is joined to its snapped node by a straight piece; legs without a network path (or points
        off the network, farther than :data:`MAX_SNAP_M`) are straight lines, as in :meth:`travel_minutes`.
        """
        lng = np.asarray(lng, dtype="float64")
        lat = np.asarray(lat, dtype="float64")
        nodes, snap = self.nearest_nodes(lng, lat, mode=mode)
        g = self.graph_for(mode)
        out: list[list[float]] = [[float(lng[0]), float(lat[0])]] if len(lng) else []
        for i in range(1, len(lng)):
            a, b = nodes[i - 1], nodes[i]
            chain: list[int] = []
            if a != b and snap[i - 1] <= MAX_SNAP_M and snap[i] <= MAX_SNAP_M:
                _, pred = csgraph.dijkstra(g, directed=True, indices=int(a), return_predecessors=True)
                k = int(b)
                while k >= 0 and k != a:
                    chain.append(k)
                    k = int(pred[k])
                chain = [int(a), *chain[::-1]] if k == a else []
            out += [[float(self.lng[k]), float(self.lat[k])] for k in chain]
            out.append([float(lng[i]), float(lat[i])])
        return out


def _from_edges(lng: np.ndarray, lat: np.ndarray, u: np.ndarray, v: np.ndarray, *, oneway: np.ndarray | None = None,
                drivable: np.ndarray | None = None, length_m: np.ndarray | None = None,
                source: str) -> RoadNetwork:
    lng = np.asarray(lng, dtype="float64")
    lat = np.asarray(lat, dtype="float64")
    u = np.asarray(u, dtype=np.int64)
    v = np.asarray(v, dtype=np.int64)
    if length_m is None:
        length_m = haversine_m(lng[u], lat[u], lng[v], lat[v])
    length_m = np.asarray(length_m, dtype="float64")
    missing = ~np.isfinite(length_m)
    if missing.any():
        length_m[missing] = haversine_m(lng[u[missing]], lat[u[missing]], lng[v[missing]], lat[v[missing]])
    n = len(u)
    return RoadNetwork(lng=lng, lat=lat, u=u, v=v, length_m=length_m,
                       oneway=np.zeros(n, bool) if oneway is None else np.asarray(oneway, dtype=bool),
                       drivable=np.ones(n, bool) if drivable is None else np.asarray(drivable, dtype=bool),
                       source=source)


def _truthy(value: object) -> bool:
    return str(value).strip().lower() in ONEWAY_YES


def _load_graphml(path: Path) -> RoadNetwork:
    import networkx as nx

    g = nx.read_graphml(path)
    ids = list(g.nodes)
    index = {k: i for i, k in enumerate(ids)}
    try:
        lng = np.array([float(g.nodes[k]["x"]) for k in ids])
        lat = np.array([float(g.nodes[k]["y"]) for k in ids])
    except KeyError as e:
        msg = f"{path.name}: nodes need 'x' and 'y' attributes (OSMnx GraphML); missing {e}"
        raise InvalidParameterError(msg) from None
    edges = list(g.edges(data=True))
    u = np.array([index[a] for a, _, _ in edges], dtype=np.int64)
    v = np.array([index[b] for _, b, _ in edges], dtype=np.int64)
    length = np.array([float(d.get("length", "nan") or "nan") for _, _, d in edges])
    if g.is_directed():
        # OSMnx stores a two-way street as two directed edges, so every directed edge is one-way as given
        oneway = np.ones(len(edges), dtype=bool)
    else:
        oneway = np.array([_truthy(d.get("oneway", False)) for _, _, d in edges], dtype=bool)

    def drive(d: dict) -> bool:
        hw = str(d.get("highway", "")).strip("[]").replace("'", "").split(", ")
        return not all(h in NON_DRIVABLE or h in NON_ROUTABLE for h in hw if h)

    drivable = np.array([drive(d) for _, _, d in edges], dtype=bool)
    return _from_edges(lng, lat, u, v, oneway=oneway, drivable=drivable, length_m=length,
                       source=f"road network: {path.name}")


def _load_pbf(path: Path) -> RoadNetwork:
    import osmium

    node_index: dict[int, int] = {}
    lng: list[float] = []
    lat: list[float] = []
    u: list[int] = []
    v: list[int] = []
    oneway: list[bool] = []
    drivable: list[bool] = []

    def node(ref: osmium.osm.NodeRef) -> int | None:
        if not ref.location.valid():
            return None
        i = node_index.get(ref.ref)
        if i is None:
            i = node_index[ref.ref] = len(lng)
            lng.append(ref.location.lon)
            lat.append(ref.location.lat)
        return i

    fp = osmium.FileProcessor(str(path), osmium.osm.NODE | osmium.osm.WAY).with_locations()
    for obj in fp:
        if not obj.is_way():
            continue
        tags = obj.tags
        hw = tags.get("highway")
        if hw is None or hw in NON_ROUTABLE or tags.get("area") == "yes":
            continue
        access = tags.get("access", "")
        if access in ("no", "private"):
            continue
        drive = (hw not in NON_DRIVABLE and tags.get("service", "") not in NON_DRIVABLE_SERVICE
                 and tags.get("motor_vehicle", "") != "no" and tags.get("motorcar", "") != "no")
        ow = tags.get("oneway", "")
        one = ow in ONEWAY_YES or (ow == "" and (tags.get("junction") in ("roundabout", "circular")
                                                 or hw in ("motorway",)))
        rev = ow in ONEWAY_REVERSE
        refs = [node(r) for r in obj.nodes]
        for a, b in pairwise(refs):
            if a is None or b is None or a == b:
                continue
            if rev:
                a, b = b, a
            u.append(a)
            v.append(b)
            oneway.append(one or rev)
            drivable.append(drive)
    if not u:
        msg = f"{path.name}: no routable highway ways found"
        raise InvalidParameterError(msg)
    return _from_edges(np.array(lng), np.array(lat), np.array(u), np.array(v), oneway=np.array(oneway),
                       drivable=np.array(drivable), source=f"road network: {path.name}")


def network_from_lines(lines, *, oneway=None, reverse=None, drivable=None, source: str) -> RoadNetwork:
    """A road network from WGS84 line strings: split at every vertex, vertices within ~1e-7° merged into one node.

    Parameters
    ----------
    lines
        Shapely LineStrings (lon/lat).
    oneway, reverse, drivable
        Per line: one-way for cars, one-way against the drawing direction, open to cars (default: two-way,
        drivable).
    source
        The network's ``source`` label.
    """
    import shapely

    lines = np.asarray(lines, dtype=object)
    n = len(lines)
    coords, parts = shapely.get_coordinates(lines, return_index=True)
    key = np.round(coords / 1e-7).astype(np.int64)
    uniq, inv = np.unique(key, axis=0, return_inverse=True)
    inv = inv.ravel()
    same = parts[1:] == parts[:-1]
    u, v, row = inv[:-1][same], inv[1:][same], parts[:-1][same]
    keep = u != v
    u, v, row = u[keep], v[keep], row[keep]
    oneway_row = np.zeros(n, dtype=bool) if oneway is None else np.asarray(oneway, dtype=bool)
    reverse_row = np.zeros(n, dtype=bool) if reverse is None else np.asarray(reverse, dtype=bool)
    drive_row = np.ones(n, dtype=bool) if drivable is None else np.asarray(drivable, dtype=bool)
    rev = reverse_row[row]
    u, v = np.where(rev, v, u), np.where(rev, u, v)
    lng, lat = uniq[:, 0] * 1e-7, uniq[:, 1] * 1e-7
    return _from_edges(lng, lat, u, v, oneway=oneway_row[row], drivable=drive_row[row], source=source)


def _load_lines(path: Path, *, layer: str | None = None) -> RoadNetwork:
    import geopandas as gpd

    gdf = gpd.read_file(path, layer=layer, engine="pyogrio")
    if gdf.crs is not None and not gdf.crs.equals("EPSG:4326"):
        gdf = gdf.to_crs("EPSG:4326")
    gdf = gdf[gdf.geometry.notna()].explode(index_parts=False)
    gdf = gdf[gdf.geom_type == "LineString"]
    if gdf.empty:
        msg = f"{path.name}: no line geometries found"
        raise InvalidParameterError(msg)
    cols = {c.lower(): c for c in gdf.columns}
    n = len(gdf)
    oneway_row = np.zeros(n, dtype=bool)
    reverse_row = np.zeros(n, dtype=bool)
    if "oneway" in cols:
        ow = gdf[cols["oneway"]].astype(str).str.strip().str.lower().to_numpy()
        oneway_row = np.isin(ow, list(ONEWAY_YES | ONEWAY_REVERSE))
        reverse_row = np.isin(ow, list(ONEWAY_REVERSE))
    drive_row = np.ones(n, dtype=bool)
    routable = np.ones(n, dtype=bool)
    if "highway" in cols:
        hw = gdf[cols["highway"]].astype(str).to_numpy()
        drive_row = ~np.isin(hw, list(NON_DRIVABLE | NON_ROUTABLE))
        routable = ~np.isin(hw, list(NON_ROUTABLE))
    return network_from_lines(gdf.geometry.to_numpy()[routable], oneway=oneway_row[routable],
                              reverse=reverse_row[routable], drivable=drive_row[routable],
                              source=f"road network: {path.name}")


#: Kinds of the ``roads`` table closed to cars (back alleys, 背街小巷: walkers and cyclists only).
STORE_NON_DRIVABLE = frozenset({"alley", "footway", "path", "pedestrian", "steps", "cycleway"})

_ROADS_SQL = """
SELECT kind, coalesce(oneway, FALSE) AS oneway, ST_AsWKB(geom) AS wkb FROM roads
WHERE geom IS NOT NULL ORDER BY road_id
"""


def store_roads_version(store) -> tuple | None:
    """What identifies the store's street network (rows and largest id), None when it has none: a service
    reloads the network when this changes."""
    has = store.sql("SELECT count(*) AS n FROM information_schema.tables WHERE table_name = 'roads' "
                    "AND table_catalog = current_database()")["n"].iloc[0]
    if not has:
        return None
    row = store.sql("SELECT count(*) AS n, max(road_id) AS m FROM roads")
    n = int(row["n"].iloc[0])
    return None if n == 0 else (n, int(row["m"].iloc[0]))


def store_network(store) -> RoadNetwork | None:
    """The store's own street network (table ``roads``, e.g. the demo city's), or None when it has none.

    Every piece of street is routable for walkers and cyclists both ways; cars use all kinds except
    :data:`STORE_NON_DRIVABLE` and respect ``oneway``. The network's ``source`` is
    ``"road network: roads table"``.
    """
    import shapely

    if store_roads_version(store) is None:
        return None
    frame = store.sql(_ROADS_SQL)
    if frame.empty:
        return None
    lines = shapely.from_wkb([bytes(b) for b in frame["wkb"]])
    return network_from_lines(lines, oneway=frame["oneway"].to_numpy(bool),
                              drivable=~frame["kind"].isin(list(STORE_NON_DRIVABLE)).to_numpy(),
                              source="road network: roads table")


def load_network(path: str | os.PathLike, *, layer: str | None = None) -> RoadNetwork:
    """Load a road network from OSM PBF, OSMnx GraphML or a line layer.

    Parameters
    ----------
    path
        ``.osm.pbf``/``.pbf`` (ways with ``highway=*`` except non-routable ones such as ``proposed`` and
        ``construction``; one edge between each pair of consecutive way nodes, haversine length; ``oneway``,
        ``junction=roundabout`` and car access tags are kept for car routing), ``.graphml`` (OSMnx: node ``x``/``y``,
        edge ``length``, directed edges as given), or a line layer ``.geojson``/``.json``/``.shp``/``.gpkg`` (lines
        split at every vertex; vertices within ~1e-7° are merged into one node; optional ``oneway`` and ``highway``
        columns are honoured).
    layer
        Layer name for multi-layer files such as GeoPackage.

    Returns
    -------
    RoadNetwork
    """
    path = Path(path)
    if not path.exists():
        msg = f"road network file not found: {path}"
        raise InvalidParameterError(msg)
    name = path.name.lower()
    if name.endswith(".pbf") or name.endswith(".osm"):
        return _load_pbf(path)
    if name.endswith(".graphml"):
        return _load_graphml(path)
    if name.endswith((".geojson", ".json", ".shp", ".gpkg", ".fgb")):
        return _load_lines(path, layer=layer)
    msg = f"unsupported road network format: {path.name} (use .osm.pbf, .graphml, .geojson, .shp or .gpkg)"
    raise InvalidParameterError(msg)
