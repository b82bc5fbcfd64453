"""The importers as a user meets them: the README's examples run as written, bad files fail with one message."""

from __future__ import annotations

import io
import re
import shlex
import sys
import warnings
import zipfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from civicgrid.api.cli import main
from civicgrid.geo import coords
from civicgrid.geo import importing as imp
from civicgrid.geo.errors import ImportFileError
from civicgrid.geo.import_report import ImportReport
from civicgrid.geo.store import Store
from civicgrid.grids.areas import import_areas, import_grids
from civicgrid.sites.events import import_events
from click.testing import CliRunner

from conftest import store_digest

ROOT = Path(__file__).resolve().parents[1]


def _digest(path) -> str:
    return store_digest(path)


# --- the README's import examples ---------------------------------------------------------------------------


def _readme_examples() -> list[list[str]]:
    """The commands of the README's "Examples, one per format" block, as argument lists."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("Examples, one per format:", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    block = re.sub(r"\\\n\s*", " ", block)
    return [shlex.split(line) for line in block.splitlines() if line.strip() and not line.startswith("#")]


#: The synthetic city of the README's files: two 4 km districts, each of two streets of two communities,
#: each of four micro-grids; 40 sites and their visits, 12345 complaints and hits.
X0, Y0, D, N = 112.90, 28.20, 0.04, 40


def _truth() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return X0 + rng.uniform(0.002, 2 * D - 0.002, N), Y0 + rng.uniform(0.002, D - 0.002, N)


def _write_readme_files(folder) -> None:
    """Write the files the README's examples name, each as a city office would hand it over."""
    districts, streets, communities, grids = [], [], [], []
    for di in range(2):
        dcode = f"43010{di + 1}"
        districts.append({"区划代码": dcode, "名称": f"测试{di + 1}区",
                          "geometry": shapely.box(X0 + di * D, Y0, X0 + (di + 1) * D, Y0 + D)})
        for si in range(2):
            scode = f"{dcode}00{si + 1}"
            streets.append({"街道编码": scode, "街道名称": f"第{di + 1}{si + 1}街道", "geometry": shapely.box(
                X0 + di * D, Y0 + si * D / 2, X0 + (di + 1) * D, Y0 + (si + 1) * D / 2)})
            for ci in range(2):
                ccode, cx, cy = f"{scode}00{ci + 1}", X0 + di * D + ci * D / 2, Y0 + si * D / 2
                communities.append({"社区编码": ccode, "社区名称": f"幸福{di}{si}{ci}社区", "街道编码": scode,
                                    "geometry": shapely.box(cx, cy, cx + D / 2, cy + D / 2)})
                grids.extend({"网格编码": f"{ccode}{gi}{gj}", "社区编码": ccode, "网格长": "张三",
                              "联系电话": "13800000000", "户数": 300,
                              "geometry": shapely.box(cx + gi * D / 4, cy + gj * D / 4, cx + (gi + 1) * D / 4,
                                                      cy + (gj + 1) * D / 4)}
                             for gi in range(2) for gj in range(2))
    gpd.GeoDataFrame(districts, crs=4326).to_file(folder / "districts.geojson")
    s = gpd.GeoDataFrame(streets, crs=4326)
    s.geometry = coords.transform_geometries(s.geometry.to_numpy(), "gcj02", to_wgs84=False)
    s.to_file(folder / "街道.shp", encoding="gbk")
    (folder / "街道.prj").unlink()
    gpd.GeoDataFrame(communities, crs=4326).to_file(folder / "社区.shp", encoding="gbk")
    with zipfile.ZipFile(folder / "社区.zip", "w") as zf:  # no .cpg, no .prj
        for ext in ("shp", "shx", "dbf"):
            zf.write(folder / f"社区.{ext}", f"社区.{ext}")
    gpd.GeoDataFrame(grids, crs=4326).to_file(folder / "grids.gpkg", layer="微网格")
    lng, lat = _truth()
    ids = [f"S{i:03d}" for i in range(N)]
    blng, blat = coords.from_wgs84(lng, lat, "bd09")
    pd.DataFrame({"点位编号": ids, "点位名称": [f"测试点位{i}" for i in range(N)],
                  "点位类别": ["银行网点", "03", "农贸（集贸）市场", "Bank branch"] * (N // 4),
                  "经度": blng, "纬度": blat, "详细地址": "某路1号", "责任单位": "某单位", "联系人": "李四",
                  "联系电话": "0731-1234567"}).to_excel(folder / "样本框.xlsx", index=False)
    glng, glat = coords.from_wgs84(lng, lat, "gcj02")
    pd.DataFrame({"工单编号": [f"G{i}" for i in range(N)],
                  "受理时间": ["2024年3月5日 14:30", "2024/3/5 14:30", "2024-03-05", "2024-03-06T09:00:00"] * (N // 4),
                  "问题小类": ["暴露垃圾", "0102", "道路不洁", "垃圾桶满溢"] * (N // 4), "经度": glng, "纬度": glat,
                  "诉求内容": "有垃圾", "办结时间": ["2024-03-08 10:00", "", "2024-03-09", ""] * (N // 4),
                  }).to_csv(folder / "12345工单.csv", index=False, encoding="gbk")
    visits = pd.DataFrame({"检查编号": [f"V{i}" for i in range(N)], "点位编号": ids,
                           "检查时间": pd.date_range("2024-03-01", periods=N, freq="6h"),
                           "检查结果": ["符合", "不符合", "2", "0"] * (N // 4), "检查人": "王五"})
    visits.to_parquet(folder / "visits.parquet")
    gpd.GeoDataFrame({"问题编号": [f"H{i}" for i in range(N)], "发现时间": visits["检查时间"].astype(str),
                      "问题类型": "暴露垃圾", "点位编号": ids, "检查编号": visits["检查编号"]},
                     geometry=shapely.points(lng, lat), crs=4326).to_parquet(folder / "hits.geoparquet")


def test_readme_import_examples_run_as_written(tmp_path, monkeypatch, shared):
    examples = _readme_examples()
    assert len(examples) >= 9 and all(e[:2] == ["civicgrid", "import"] for e in examples)
    _write_readme_files(tmp_path)
    (tmp_path / "sf311.csv").symlink_to(shared / "us_sf311" / "sf311_cases_sample_10000.csv")
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for args in examples:
        res = runner.invoke(main, [*args[1:], "--quiet"])
        assert res.exit_code == 0, (args, res.output)
    store = Store(tmp_path / "city.duckdb")
    log = store.sql("SELECT layer, file, rows_read, loaded, duplicates, rejected FROM imports ORDER BY import_id")
    assert (log["rows_read"] == log["loaded"] + log["duplicates"] + log["rejected"]).all()
    assert (log["rejected"] == 0).all() and (log["duplicates"] == 0).all(), log
    assert log["loaded"].tolist() == [2, 4, 8, 32, N, N, N, N]
    # Streets came from GCJ-02 and sites from BD-09: stored in WGS84 where the city drew them.
    areas = store.sql("SELECT code, level, parent_code, ST_AsWKB(geom) AS wkb FROM areas ORDER BY code")
    streets = areas[areas["level"] == "street"]
    assert streets["parent_code"].tolist() == ["430101", "430101", "430102", "430102"]
    boxes = shapely.from_wkb(streets["wkb"].map(bytes))
    assert np.abs(shapely.bounds(boxes)[0] - [X0, Y0, X0 + D, Y0 + D / 2]).max() < 1e-6
    assert set(areas.loc[areas["level"] == "community", "parent_code"]) == set(streets["code"])
    lng, lat = _truth()
    for table, prefix in (("sites", "S"), ("events", "G"), ("inspections", "V"), ("events", "H")):
        got = store.sql(f"SELECT external_id, lng, lat, grid_code FROM {table} WHERE external_id LIKE '{prefix}%'")
        i = got["external_id"].str[1:].astype(int).to_numpy()
        assert np.abs(got["lng"] - lng[i]).max() < 1e-6 and np.abs(got["lat"] - lat[i]).max() < 1e-6, table
        assert got["grid_code"].notna().all(), table
    hits = store.sql("SELECT count(*) AS n FROM events WHERE source = 'inspection' AND site_id IS NOT NULL "
                     "AND inspection_id IS NOT NULL")
    assert hits["n"][0] == N
    sf = Store(tmp_path / "sf.duckdb").sql("SELECT rows_read, loaded, rejected FROM imports")
    # the 24 rows without coordinates have an address: kept, unlocated (issue 13)
    assert sf.values.tolist() == [[10_000, 10_000, 0]]
    # Every example again: nothing new.
    for args in examples:
        assert runner.invoke(main, [*args[1:], "--quiet"]).exit_code == 0
    again = store.sql("SELECT rows_read, loaded, duplicates FROM imports ORDER BY import_id").iloc[len(log):]
    assert (again["loaded"] == 0).all() and (again["duplicates"] == again["rows_read"]).all()


# --- bad input: one clear message, nothing changed ----------------------------------------------------------


def _fails(db, args, match) -> str:
    """Run ``civicgrid import ARGS`` and check it fails with one ``error:`` line and leaves ``db`` as it was."""
    before = _digest(db)
    res = CliRunner().invoke(main, ["import", *args, "--db", str(db), "--quiet"])
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.output, res.output
    assert re.search(match, lines[0]), lines[0]
    assert _digest(db) == before
    return lines[0]


def test_an_unknown_map_field_is_refused(small_city, tmp_path):
    """A misspelt --map field was ignored silently (and its column kept from the recognised names)."""
    f = tmp_path / "grids.geojson"
    gpd.GeoDataFrame({"网格编码": ["G9"], "网格长电话": ["138"]},
                     geometry=[shapely.box(112.90, 28.20, 112.905, 28.205)], crs=4326).to_file(f)
    _fails(small_city, ["grids", str(f), "--code", "网格编码", "--map", "leader_phon=网格长电话"],
           r"unknown field 'leader_phon' in --map leader_phon=网格长电话: did you mean leader_phone\? "
           r"This import's fields are: code, name, parent, leader, leader_phone, households")
    _fails(small_city, ["grids", str(f), "--map", "leader_phone=电话"],
           r"column '电话' \(given for leader_phone\) is not in the file. Columns are: 网格编码, 网格长电话")


def test_a_file_of_blank_lines_is_empty(small_city, tmp_path):
    f = tmp_path / "blank.csv"
    f.write_bytes(b"\xef\xbb\xbf\n\r\n   \n")
    _fails(small_city, ["events", str(f)], r"blank\.csv is empty: it holds only blank lines or spaces")


def test_wrong_content_is_named_in_plain_words(small_city, tmp_path):
    f = tmp_path / "export.xlsx"
    f.write_text("id,time\n1,2024-03-05\n")
    _fails(small_city, ["events", str(f)], r"export\.xlsx is not an XLSX workbook: its content looks like text")


def test_a_ragged_csv_row_is_a_reject(small_city, tmp_path):
    f = tmp_path / "ragged.csv"
    f.write_text("编号,时间,经度,纬度\nA,2024-03-05,112.91,28.21\nB,2024-03-05,112.91\n", encoding="utf-8")
    res = CliRunner().invoke(main, ["import", "events", str(f), "--db", str(small_city)])
    assert res.exit_code == 0, res.output
    assert "row 3: 纬度: 3 fields where the header has 4" in res.output, res.output


def test_an_incomplete_shapefile_names_its_missing_files(small_city, tmp_path):
    gpd.GeoDataFrame({"code": ["A"], "name": ["甲"]}, geometry=[shapely.box(112.9, 28.2, 112.91, 28.21)],
                     crs=4326).to_file(tmp_path / "街道.shp", encoding="gbk")
    (tmp_path / "街道.shx").unlink()
    _fails(small_city, ["areas", str(tmp_path / "街道.shp"), "--level", "street"],
           r"街道\.shp is an incomplete shapefile: 街道\.shx must sit beside it")
    (tmp_path / "街道.dbf").unlink()
    _fails(small_city, ["areas", str(tmp_path / "街道.shp"), "--level", "street"],
           r"街道\.shx and 街道\.dbf must sit beside it")


def test_gdal_warnings_do_not_reach_stderr(small_city, tmp_path):
    f = tmp_path / "broken.gpkg"
    f.write_bytes(b"SQLite format 3\x00" + b"\x00" * 200)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RuntimeWarning escaping pyogrio would fail the import here
        with pytest.raises(ImportFileError, match=r"broken\.gpkg is not a readable GeoPackage"):
            import_areas(f, db=small_city, level="district", progress=False)


def test_a_geojson_gdal_cannot_read_gets_no_driver_advice(small_city, tmp_path):
    f = tmp_path / "list.json"
    f.write_text('[{"a": 1}]')
    msg = _fails(small_city, ["areas", str(f), "--level", "district"], r"list\.json is not a readable GeoJSON file")
    assert "DRIVER" not in msg and "is not in a format GDAL recognises" in msg


# --- the report ---------------------------------------------------------------------------------------------


def test_summary_counts_many_distinct_values_by_kind(small_city, tmp_path):
    f = tmp_path / "i.csv"
    rows = "".join(f"V{i},S{i:03d},2024-03-05 09:00,符合\n" for i in range(25))
    f.write_text("编号,点位编号,检查时间,检查结果\n" + rows, encoding="utf-8")
    from civicgrid.sites.inspections import import_inspections

    rep = import_inspections(f, db=small_city, progress=False)
    assert rep.rejected == 25 and rep.rejects[0] == {"row": 2, "field": "site", "reason": "unknown site 'S000'"}
    text = rep.summary()
    by_reason = text.split("rejected rows by reason:\n", 1)[1].split("  first", 1)[0]
    assert by_reason.strip() == "25  unknown site"
    few = ImportReport(layer="events", file="x.csv", rows_read=3, rejected=3, rejects=[
        {"row": 2, "field": "type", "reason": "unknown problem type '占道' (closest: 占道经营)"},
        {"row": 3, "field": "type", "reason": "unknown problem type '占道' (closest: 占道经营)"},
        {"row": 4, "field": "time", "reason": "unparseable time '昨天'"}])
    lines = few.summary().split("rejected rows by reason:\n", 1)[1].splitlines()[:2]
    assert [line.split() for line in lines] == [["2", "unknown", "problem", "type", "'占道'"],
                                                ["1", "unparseable", "time", "'昨天'"]]


def test_no_progress_bar_when_stderr_is_not_a_terminal(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    bar = imp.progress_bar(10, desc="import")
    bar.update(10)
    bar.close()
    assert bar.disable and sys.stderr.getvalue() == ""
    assert imp.progress_bar(10, desc="import", enabled=False).disable


def test_report_json_has_the_documented_keys_for_every_layer(small_city, tmp_path):
    f = tmp_path / "e.csv"
    f.write_text("单号,时间,经度,纬度\n1,2024-03-05 10:00,112.905,28.205\n1,2024-03-05 10:00,112.905,28.205\n"
                 "2,2024-03-05 10:00,28.205,112.905\n", encoding="utf-8")
    rep = import_events(f, db=small_city, progress=False).to_dict()
    assert {"rows_read", "loaded", "duplicates", "rejected", "outside_grids", "rejects"} <= set(rep)
    assert (rep["rows_read"], rep["loaded"], rep["duplicates"], rep["rejected"]) == (3, 1, 1, 1)
    assert rep["rejects"][0]["row"] == 4 and rep["rejects"][0]["field"] == "lat/lng"
    assert rep["rejects"][0]["reason"].startswith("coordinates look swapped")
    g = tmp_path / "g.geojson"
    gpd.GeoDataFrame({"code": ["X1"]}, geometry=[shapely.box(112.90, 28.20, 112.901, 28.201)], crs=4326).to_file(g)
    grid = import_grids(g, db=small_city, progress=False).to_dict()
    assert {"rows_read", "loaded", "duplicates", "rejected", "outside_grids", "rejects"} <= set(grid)


def test_half_a_coordinate_pair_names_the_missing_column(small_city, tmp_path):
    f = tmp_path / "e.csv"
    f.write_text("编号,时间,X,Y\n1,2024-03-05,112.905,28.205\n", encoding="utf-8")
    _fails(small_city, ["events", str(f), "--lat", "Y"],
           r"no longitude column \(the latitude is 'Y'\): give --lng COLUMN\. Columns are: 编号, 时间, X, Y")
    _fails(small_city, ["sites", str(f), "--name", "编号", "--category", "时间"],
           r"no coordinates: give --lat and --lng columns, --point COLUMN, or a spatial file")


def test_mostly_swapped_coordinates_get_one_warning(small_city, tmp_path):
    f = tmp_path / "e.csv"
    f.write_text("编号,时间,lat,lng,点\n1,2024-03-05,112.905,28.205,\"112.905, 28.205\"\n"
                 "2,2024-03-05,112.915,28.215,\"112.915, 28.215\"\n3,2024-03-05,28.205,112.905,\"28.205, 112.905\"\n",
                 encoding="utf-8")
    rep = import_events(f, db=small_city, progress=False)
    assert (rep.loaded, rep.rejected) == (1, 2) and {r["row"] for r in rep.rejects} == {2, 3}
    assert [w for w in rep.warnings if "wrong way round" in w] == [
        "most rows have latitude and longitude the wrong way round: is --lat lat --lng lng right?"]
    g = tmp_path / "p.csv"
    f.rename(g)
    rep = import_events(g, db=small_city, point="点", progress=False)
    assert rep.rejected == 2 and any("look like (lon, lat)" in w for w in rep.warnings)
    h = tmp_path / "ok.csv"
    h.write_text("编号,时间,lat,lng\n9,2024-03-05,28.205,112.905\n8,2024-03-05,112.905,28.205\n"
                 "7,2024-03-05,28.215,112.915\n", encoding="utf-8")
    assert not any("wrong way round" in w for w in import_events(h, db=small_city, progress=False).warnings)


def test_one_importer_registry_builds_the_cli_and_the_api():
    """``civicgrid.sites.importers.IMPORTERS`` is the one table of importers: each entry's fields are the
    importer's own, its options are the function's keywords, and ``civicgrid import LAYER`` (flags, ``--help``)
    and ``POST /api/imports/{layer}`` (its checks, its docs) are built from it."""
    import inspect

    from civicgrid.api.routers.users import import_file
    from civicgrid.geo.errors import InvalidParameterError, NotFoundError
    from civicgrid.grids.areas import AREA_FIELDS, GRID_FIELDS
    from civicgrid.grids.roads import ROAD_FIELDS, import_roads
    from civicgrid.sites.events import EVENT_FIELDS
    from civicgrid.sites.frame import SITE_FIELDS, import_sites
    from civicgrid.sites.importers import FIELD_HELP, IMPORTERS, OPTIONS, get_importer
    from civicgrid.sites.inspections import INSPECTION_FIELDS, import_inspections

    expected = {"areas": (import_areas, AREA_FIELDS), "grids": (import_grids, GRID_FIELDS),
                "sites": (import_sites, SITE_FIELDS), "events": (import_events, EVENT_FIELDS),
                "inspections": (import_inspections, INSPECTION_FIELDS), "roads": (import_roads, ROAD_FIELDS)}
    assert {k: (i.function, list(i.fields)) for k, i in IMPORTERS.items()} == expected
    api_form = set(inspect.signature(import_file).parameters)
    for layer, importer in IMPORTERS.items():
        keywords = set(inspect.signature(importer.function).parameters) - {"path", "db", "mapping", "progress",
                                                                           "cases"}
        assert set(importer.takes) == keywords, layer  # every option the function takes, and only those
        assert set(importer.options) - set(importer.takes) <= {"date_order"}  # applied around the function
        assert set(importer.flags) <= set(importer.fields) and set(importer.fields) <= set(FIELD_HELP)
        assert {"layer_name" if o == "layer" else o for o in importer.options} <= api_form
        command = main.commands["import"].commands[layer]
        flags = {opt for param in command.params for opt in param.opts}
        assert {f"--{f}" for f in importer.flags} | {f"--{o.replace('_', '-')}" for o in importer.options} <= flags
        out = CliRunner().invoke(main, ["import", layer, "--help"], terminal_width=400).output
        assert f"--map {importer.example}" in out and ", ".join(importer.fields) in out.replace("\n", " ")
        assert all(OPTIONS[o].help.split()[0] in out for o in importer.options)
    assert get_importer("events") is IMPORTERS["events"]
    with pytest.raises(NotFoundError,
                       match="unknown layer 'rivers'; layers: areas, grids, roads, sites, events, inspections"):
        get_importer("rivers")
    with pytest.raises(InvalidParameterError,
                       match=r"grids imports take no sheet \(options: crs, encoding, layer, repair\)"):
        IMPORTERS["grids"].check_options({"sheet": "Sheet1", "crs": None})
    with pytest.raises(InvalidParameterError, match="areas imports need level: district, street or community"):
        IMPORTERS["areas"].check_options({"crs": "wgs84"})
    assert IMPORTERS["events"].check_options({"source": "inspection", "tz": None}) == {"source": "inspection"}
