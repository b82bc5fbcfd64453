"""Roads of an OpenStreetMap extract or a line layer, for placing records that have only an address.

``civicgrid import roads FILE`` loads the named roads (and the house numbers, where the data has them) that
:class:`civicgrid.grids.road_places.RoadGazetteer` matches addresses against (``福田区深南大道1001号``,
``深南大道与香梅路交叉口``, ``Fabianinkatu 12``). It reads, offline:

- an OSMnx GraphML graph (``ox.save_graphml``): each edge a piece of road, with its ``name`` (a list when the
  edge joins two ways: one row per name) and its geometry (a straight line between its nodes when it has
  none); the two directions of a two-way street are one piece;
- an OpenStreetMap extract (``.osm.pbf``, ``.osm``) through GDAL's OSM driver: the ``lines`` with a
  ``highway`` tag and a name, and the points and buildings with ``addr:street`` + ``addr:housenumber``
  (numbered addresses);
- any line layer GDAL reads (GeoJSON, Shapefile, GeoPackage...), its name column detected or given with
  ``--map name=COLUMN``, and house-number ranges with ``--map number_from=… number_to=…``.

Each piece keeps the area codes of its middle (district, street, community), so that an address naming its
district, or a row's area column, picks the right one of two roads of one name.
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
import warnings
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path

import duckdb
import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyogrio
import shapely
from civicgrid.geo import importing as imp
from civicgrid.geo.coords import parse_crs, transform_geometries
from civicgrid.geo.errors import ImportFileError
from civicgrid.geo.import_report import ImportReport, Rejects, finish_report
from civicgrid.geo.store import writing
from civicgrid.grids.locate import Locator
from civicgrid.grids.road_places import road_key

#: The fields of a roads import (``--map FIELD=COLUMN`` for a line layer; OSM files need none).
ROAD_FIELDS = ["name", "kind", "number_from", "number_to"]
#: Column names taken as the road's name in a line layer when ``--map name=`` is not given.
NAME_COLUMNS = ("name", "NAME", "Name", "路名", "道路名称", "道路名", "road_name", "ROAD_NAME", "street", "STREET",
                "FULLNAME", "fullname", "st_name")
#: Metres per degree of latitude; of longitude, times the cosine of the latitude.
M_PER_DEG = 110_540.0, 111_320.0
_TAG = re.compile(r'"((?:[^"\\]|\\.)*)"=>"((?:[^"\\]|\\.)*)"')


def _tags(text: object) -> dict[str, str]:
    """The ``other_tags`` of GDAL's OSM driver (``"k"=>"v","k2"=>"v2"``) as a dict."""
    return dict(_TAG.findall(text)) if isinstance(text, str) else {}


def length_m(geoms: np.ndarray) -> np.ndarray:
    """Length in metres of WGS84 lines (each segment on the local equirectangular scale)."""
    out = np.zeros(len(geoms))
    for i, g in enumerate(geoms):
        xy = shapely.get_coordinates(g)
        if len(xy) < 2:
            continue
        lat = np.radians((xy[1:, 1] + xy[:-1, 1]) / 2)
        dx = np.diff(xy[:, 0]) * M_PER_DEG[1] * np.cos(lat)
        dy = np.diff(xy[:, 1]) * M_PER_DEG[0]
        out[i] = float(np.hypot(dx, dy).sum())
    return out


def _names(value: object) -> list[str]:
    """The names of a GraphML attribute: one, or a Python list written as text (``['红荔路', '红荔西路']``)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    text = str(value).strip()
    if text.startswith("[") and text.endswith("]"):
        try:
            items = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            items = [text]
        return [str(v).strip() for v in items if str(v).strip()]
    return [text] if text else []


def read_graphml(path: str | os.PathLike) -> tuple[gpd.GeoDataFrame, str | None]:
    """The edges of an OSMnx GraphML file: ``name`` (as written: one or a list), ``kind`` (highway), ``osm_id``
    and the line, one row per piece of road (the reverse edge of a two-way street dropped); and the graph's
    CRS."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        msg = f"{Path(path).name} is not a readable GraphML file: {exc}"
        raise ImportFileError(msg) from exc
    ns = {"g": "http://graphml.graphdrawing.org/xmlns"}
    keys = {k.get("id"): (k.get("for"), k.get("attr.name")) for k in root.findall("g:key", ns)}
    graph = root.find("g:graph", ns)
    if graph is None:
        msg = f"{Path(path).name} holds no graph"
        raise ImportFileError(msg)
    attrs = {keys.get(d.get("key"), (None, None))[1]: d.text for d in graph.findall("g:data", ns)}
    nodes: dict[str, tuple[float, float]] = {}
    for n in graph.findall("g:node", ns):
        d = {keys.get(x.get("key"), (None, None))[1]: x.text for x in n.findall("g:data", ns)}
        try:
            nodes[str(n.get("id"))] = (float(str(d["x"])), float(str(d["y"])))
        except (KeyError, TypeError, ValueError):
            continue
    rows, seen = [], set()
    for e in graph.findall("g:edge", ns):
        d = {keys.get(x.get("key"), (None, None))[1]: x.text for x in e.findall("g:data", ns)}
        u, v = e.get("source"), e.get("target")
        wkt = d.get("geometry")
        if wkt:
            line = shapely.from_wkt(wkt)
        elif u in nodes and v in nodes:
            line = shapely.LineString([nodes[u], nodes[v]])
        else:
            line = None
        same = (frozenset((u, v)), shapely.to_wkb(shapely.normalize(line)) if line is not None else None,
                d.get("name"))
        if same in seen:  # the other direction of a two-way street: the same piece
            continue
        seen.add(same)
        rows.append({"name": d.get("name"), "kind": _first(d.get("highway")), "osm_id": d.get("osmid"),
                     "geometry": line})
    frame = gpd.GeoDataFrame(rows, columns=["name", "kind", "osm_id", "geometry"], geometry="geometry")
    return frame, attrs.get("crs")


def _first(value: object) -> str | None:
    names = _names(value)
    return names[0] if names else None


def read_osm(path: str | os.PathLike) -> tuple[gpd.GeoDataFrame, pd.DataFrame]:
    """The named ``highway`` lines of an OpenStreetMap extract (GDAL's OSM driver, offline) and its numbered
    addresses: points and buildings with ``addr:street`` and ``addr:housenumber`` (name, number, lng, lat)."""
    with warnings.catch_warnings():  # GDAL's notes on unclosed rings of buildings: not roads
        warnings.simplefilter("ignore", RuntimeWarning)
        return _read_osm(path)


def _read_osm(path: str | os.PathLike) -> tuple[gpd.GeoDataFrame, pd.DataFrame]:
    try:
        lines = pyogrio.read_dataframe(path, layer="lines", columns=["osm_id", "name", "highway", "other_tags"])
    except Exception as exc:
        msg = f"{Path(path).name} is not a readable OpenStreetMap extract: {exc}"
        raise ImportFileError(msg) from exc
    lines = lines[lines["highway"].notna()].rename(columns={"highway": "kind"})
    numbered = []
    for layer in ("points", "multipolygons"):
        try:
            df = pyogrio.read_dataframe(path, layer=layer, columns=["other_tags"], on_invalid="ignore")
        except Exception:
            continue
        has = df["other_tags"].fillna("").str.contains("addr:housenumber", regex=False)
        df = df[has & df.geometry.notna()]
        if not len(df):
            continue
        tags = [_tags(t) for t in df["other_tags"]]
        pts = shapely.point_on_surface(df.geometry.to_numpy()) if layer != "points" else df.geometry.to_numpy()
        numbered.append(pd.DataFrame({"name": [t.get("addr:street") for t in tags],
                                      "number": [t.get("addr:housenumber") for t in tags],
                                      "lng": shapely.get_x(pts), "lat": shapely.get_y(pts)}))
    numbers = pd.concat(numbered, ignore_index=True) if numbered else pd.DataFrame(
        columns=["name", "number", "lng", "lat"])
    numbers = numbers.dropna(subset=["name", "number"])
    return gpd.GeoDataFrame(lines.drop(columns=["other_tags"]), geometry="geometry"), numbers


def read_lines(path: str | os.PathLike, *, mapping: dict[str, str], layer: str | None,
               encoding: str | None) -> tuple[gpd.GeoDataFrame, dict[str, str]]:
    """A line layer GDAL reads, with the columns of ``mapping`` (the name column detected when not given)."""
    try:
        frame = pyogrio.read_dataframe(path, layer=layer, encoding=encoding)
    except Exception as exc:
        msg = f"{Path(path).name} is not a readable line layer: {exc}"
        raise ImportFileError(msg) from exc
    cols = dict(mapping)
    if "name" not in cols:
        found = [c for c in NAME_COLUMNS if c in frame.columns]
        if not found:
            msg = (f"{Path(path).name}: no road name column found (columns: "
                   f"{', '.join(c for c in frame.columns if c != 'geometry')}); give it with --map name=COLUMN")
            raise ImportFileError(msg)
        cols["name"] = found[0]
    missing = [c for c in cols.values() if c not in frame.columns]
    if missing:
        msg = f"{Path(path).name} has no column {', '.join(map(repr, missing))}"
        raise ImportFileError(msg)
    out = gpd.GeoDataFrame({f: frame[c] for f, c in cols.items()}, geometry=frame.geometry, crs=frame.crs)
    return out, cols


def _explode_lines(geoms: np.ndarray) -> np.ndarray:
    """Lines as they are; multi-lines merged where they join (else kept whole); other geometries None."""
    out = np.full(len(geoms), None, dtype=object)
    for i, g in enumerate(geoms):
        if g is None or g.is_empty:
            continue
        if g.geom_type == "LineString":
            out[i] = g
        elif g.geom_type == "MultiLineString":
            out[i] = shapely.line_merge(g)
    return out


def _number(value: object) -> int | None:
    m = re.match(r"^\s*(\d+)", str(value)) if value is not None and not pd.isna(value) else None
    return int(m.group(1)) if m else None


def import_roads(path: str | os.PathLike, *, db: str | os.PathLike, mapping: dict[str, str] | None = None,
                 crs: str | None = None, encoding: str | None = None, layer: str | None = None,
                 progress: bool = True) -> ImportReport:
    """Import the named roads (and numbered addresses) of an OSM extract, an OSMnx GraphML graph or a line layer.

    Each row read is a piece of road (an edge, a way, a line): loaded under each of its names, rejected when it
    has no name or no line, a duplicate when the store holds it already (the same name and line). The numbered
    addresses of an OSM extract go to ``road_numbers`` (``report.road_numbers`` counts them).

    Parameters
    ----------
    path
        ``.graphml``, ``.osm.pbf`` / ``.osm``, or a line layer (GeoJSON, Shapefile, GeoPackage...).
    mapping
        For a line layer: ``name`` (detected when not given), ``kind``, ``number_from``, ``number_to``.
    crs
        The coordinates' system when the file does not say (a GraphML's ``crs``, a layer's .prj).
    """
    del progress  # one pass over a file of roads: no progress bar
    started = datetime.now().astimezone()  # a moment; record_import stores it on the store's clock
    name = str(path).lower()
    numbers = pd.DataFrame(columns=["name", "number", "lng", "lat"])
    report = ImportReport(layer="roads", file=str(path))
    cols: dict[str, str] = {}
    if name.endswith(".graphml"):
        frame, file_crs = read_graphml(path)
        report.format = "graphml"
        source_crs = crs or file_crs
    elif name.endswith((".osm.pbf", ".pbf", ".osm")):
        frame, numbers = read_osm(path)
        report.format = "osm"
        source_crs = crs or "EPSG:4326"
    else:
        frame, cols = read_lines(path, mapping=dict(mapping or {}), layer=layer, encoding=encoding)
        report.format = Path(path).suffix.lstrip(".").lower() or "ogr"
        source_crs = crs or (frame.crs.to_string() if frame.crs is not None else None)
        if source_crs is None:
            report.warnings.append("the file does not say its coordinates' system: WGS84 assumed (give --crs)")
    report.columns = cols
    report.crs = str(source_crs or "EPSG:4326")
    geoms = _explode_lines(frame.geometry.to_numpy())
    if source_crs is not None and str(source_crs).strip().lower() not in ("epsg:4326", "wgs84", "4326"):
        ok = np.flatnonzero([g is not None for g in geoms])
        geoms[ok] = transform_geometries(geoms[ok], parse_crs(str(source_crs)))
    rej = Rejects(np.arange(1, len(frame) + 1))  # rows: the pieces in file order
    report.rows_read = len(frame)
    names = [list(dict.fromkeys(_names(v))) for v in frame["name"]]
    rej.add(np.array([g is None for g in geoms]), "geometry", "not a line")
    rej.add(np.array([not n for n in names]), "name", "no road name (an address cannot name it)")
    keep = np.flatnonzero(rej.ok)
    pieces = pd.DataFrame({
        "row": np.repeat(keep, [len(names[i]) for i in keep]),
        "name": [n for i in keep for n in names[i]],
    })
    pieces["geom"] = geoms[pieces["row"].to_numpy()] if len(pieces) else []
    for f in ("kind", "osm_id", "number_from", "number_to"):
        values = frame[f].to_numpy(dtype=object) if f in frame.columns else np.full(len(frame), None, dtype=object)
        pieces[f] = values[pieces["row"].to_numpy()] if len(pieces) else []
    with writing(db) as con:
        loaded_rows, dup_rows, n_numbers = _store(con, pieces, numbers, report)
        report.road_numbers = n_numbers
        finish_report(report, rej, loaded=len(loaded_rows), duplicates=len(dup_rows - loaded_rows))
        imp.record_import(con, report, started)
    return report


def _key(*parts: object) -> str:
    return hashlib.sha1("\x1f".join(map(str, parts)).encode("utf-8")).hexdigest()[:24]


def _store(con: duckdb.DuckDBPyConnection, pieces: pd.DataFrame, numbers: pd.DataFrame,
           report: ImportReport) -> tuple[set, set, int]:
    """Insert the new pieces and numbers; return the rows loaded (a name of theirs new), the rows whose every
    name was stored already, and the count of numbers loaded."""
    report.import_id = imp.next_id(con, "imports", "import_id")
    locator = Locator(con)
    stored = set(con.execute("SELECT dedup_key FROM roads").fetchnumpy()["dedup_key"].tolist())
    if len(pieces):
        wkb = shapely.to_wkb(pieces["geom"].to_numpy(), hex=True)
        pieces["dedup_key"] = [_key(n, w) for n, w in zip(pieces["name"], wkb, strict=True)]
    else:
        pieces["dedup_key"] = []
    dup = pieces["dedup_key"].isin(stored) | pieces["dedup_key"].duplicated()
    new = pieces[~dup].reset_index(drop=True)
    if len(new):
        mid = shapely.line_interpolate_point(new["geom"].to_numpy(), 0.5, normalized=True)
        at = locator.locate(shapely.get_x(mid), shapely.get_y(mid))
        first = imp.next_id(con, "roads", "road_id")
        data = pa.table({
            "road_id": pa.array(np.arange(first, first + len(new)), pa.int64()),
            "name": pa.array(new["name"].astype(str).str.strip(), pa.string()),
            "name_key": pa.array([road_key(n) for n in new["name"]], pa.string()),
            "kind": pa.array([None if pd.isna(k) else str(k) for k in new["kind"]], pa.string()),
            "osm_id": pa.array([None if pd.isna(k) else str(k) for k in new["osm_id"]], pa.string()),
            "number_from": pa.array([_number(v) for v in new["number_from"]], pa.int32()),
            "number_to": pa.array([_number(v) for v in new["number_to"]], pa.int32()),
            "length_m": pa.array(length_m(new["geom"].to_numpy())),
            **{c: pa.array(at[c].astype(object).where(at[c].notna(), None).to_numpy(), pa.string())
               for c in ("district_code", "street_code", "community_code")},
            "dedup_key": pa.array(new["dedup_key"], pa.string()),
            "import_id": pa.array(np.full(len(new), report.import_id), pa.int32()),
            "wkb": pa.array(shapely.to_wkb(new["geom"].to_numpy()), pa.binary()),
        })
        imp.insert_arrow(con, "roads", data, geometry="wkb")
    n_numbers = 0
    if len(numbers):
        numbers = numbers.assign(name=numbers["name"].astype(str).str.strip(),
                                 number=numbers["number"].astype(str).str.strip())
        numbers["dedup_key"] = [_key(n, h, round(x, 7), round(y, 7)) for n, h, x, y in
                                numbers[["name", "number", "lng", "lat"]].itertuples(index=False)]
        have = set(con.execute("SELECT dedup_key FROM road_numbers").fetchnumpy()["dedup_key"].tolist())
        numbers = numbers[~numbers["dedup_key"].isin(have) & ~numbers["dedup_key"].duplicated()]
        at = locator.locate(numbers["lng"].to_numpy(float), numbers["lat"].to_numpy(float))
        data = pa.table({
            "name": pa.array(numbers["name"], pa.string()),
            "name_key": pa.array([road_key(n) for n in numbers["name"]], pa.string()),
            "number": pa.array(numbers["number"], pa.string()),
            "lng": pa.array(numbers["lng"].to_numpy(float)), "lat": pa.array(numbers["lat"].to_numpy(float)),
            **{c: pa.array(at[c].astype(object).where(at[c].notna(), None).to_numpy(), pa.string())
               for c in ("district_code", "street_code")},
            "dedup_key": pa.array(numbers["dedup_key"], pa.string()),
            "import_id": pa.array(np.full(len(numbers), report.import_id), pa.int32()),
        })
        imp.insert_arrow(con, "road_numbers", data)
        n_numbers = len(numbers)
    if not len(new) and not len(pieces):
        report.warnings.append("no named road in the file")
    return set(new["row"].tolist()), set(pieces.loc[dup, "row"].tolist()), n_numbers
