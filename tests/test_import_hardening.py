"""Issue 14, part 4: importers never merge a bad row into another, name what they cannot read, and refuse an
invalid polygon (or repair it on request, saying what changed)."""

from __future__ import annotations

import csv
import io
import zipfile

import geopandas as gpd
import pytest
import shapely
from civicgrid.api.cli import main
from civicgrid.geo import _csv as geo_csv
from civicgrid.geo.errors import ReadError
from civicgrid.geo.readers import read_batches, read_table
from civicgrid.geo.store import Store
from civicgrid.geo.store_files import copy_store
from click.testing import CliRunner


def _rows(result) -> list[dict]:
    return [{k: v for k, v in r.items()} for r in result.table.to_pylist()]


# --- CSV rows the parser cannot take -------------------------------------------------------------------------


def test_an_unclosed_quote_is_a_reject_and_the_next_rows_are_rows(tmp_path):
    f = tmp_path / "unclosed.csv"
    f.write_text('code,name\n1,"unclosed\n2,b\n3,c\n', encoding="utf-8")
    r = read_table(f)
    assert _rows(r) == [{"code": "2", "name": "b", "__row__": 3}, {"code": "3", "name": "c", "__row__": 4}]
    assert [(x["row"], x["field"]) for x in r.rejects] == [(2, "name")]
    assert r.rejects[0]["reason"].startswith("unclosed quote: the value of name opens a quote on line 2")
    # Python's csv module, strict, reads the same file as: the quote swallows everything after it
    with pytest.raises(csv.Error):
        list(csv.reader(io.StringIO(f.read_text()), strict=True))


def test_rows_of_the_wrong_field_count_are_rejects_with_their_row(tmp_path):
    f = tmp_path / "fields.csv"
    f.write_text('code,name\n1,"multi\nline"\n2,b,extra\n3\n4,d\n', encoding="utf-8")
    r = read_table(f)
    assert _rows(r) == [{"code": "1", "name": "multi\nline", "__row__": 2}, {"code": "4", "name": "d", "__row__": 5}]
    assert [(x["row"], x["field"], x["reason"].split(" (")[0]) for x in r.rejects] == [
        (3, "column 3", "3 fields where the header has 2"), (4, "name", "1 field where the header has 2")]


def test_a_bad_row_far_into_a_streamed_file_keeps_every_row_number(tmp_path, monkeypatch):
    monkeypatch.setattr(geo_csv, "BLOCK_BYTES", 4096)  # many Arrow blocks before the bad row
    lines = [f"{i},v{i}" for i in range(3000)]
    lines[2500] = "2500,v2500,extra"
    f = tmp_path / "late.csv"
    f.write_text("code,name\n" + "\n".join(lines) + "\n", encoding="utf-8")
    reader = read_batches(f, rows=500)
    table = __import__("pyarrow").concat_tables(list(reader.batches))
    rows = table.column("__row__").to_pylist()
    codes = table.column("code").to_pylist()
    assert len(rows) == 2999 and 2502 not in rows
    assert all(int(c) + 2 == r for c, r in zip(codes, rows, strict=True))  # no row shifted by the reject
    assert reader.rejects == [{"row": 2502, "field": "column 3",
                               "reason": "3 fields where the header has 2 (an unquoted comma or a missing value "
                                         "on line 2502)"}]


def test_a_ten_megabyte_field_is_a_reject_not_an_arrow_message(tmp_path):
    f = tmp_path / "big.csv"
    f.write_text("code,name\n1," + "x" * (10 << 20) + "\n2,b\n", encoding="utf-8")
    r = read_table(f)
    assert _rows(r) == [{"code": "2", "name": "b", "__row__": 3}]
    assert r.rejects == [{"row": 2, "field": "name",
                          "reason": "a value longer than the 1,000,000 characters a cell may hold"}]
    f2 = tmp_path / "mid.csv"  # 2 MB: within Arrow's block, still over the cell limit
    f2.write_text("code,name\n1," + "y" * (2 << 20) + "\n2,b\n", encoding="utf-8")
    r = read_table(f2)
    assert _rows(r) == [{"code": "2", "name": "b", "__row__": 3}] and r.rejects[0]["row"] == 2
    assert "2,097,152 characters" in r.rejects[0]["reason"]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_is_read(tmp_path, encoding):
    f = tmp_path / "u16.csv"
    f.write_bytes('code,name\n1,东区\n2,"西\n区"\n'.encode(encoding))
    r = read_table(f)
    assert r.encoding == encoding
    assert _rows(r) == [{"code": "1", "name": "东区", "__row__": 2}, {"code": "2", "name": "西\n区", "__row__": 3}]


def test_a_zipped_shapefile_without_its_dbf_says_so(tmp_path):
    gpd.GeoDataFrame({"code": ["A"], "name": ["甲"]}, geometry=[shapely.box(112.9, 28.2, 112.91, 28.21)],
                     crs=4326).to_file(tmp_path / "街道.shp", encoding="utf-8")
    z = tmp_path / "streets.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for ext in (".shp", ".shx", ".prj"):
            zf.write(tmp_path / f"街道{ext}", f"街道{ext}")
    with pytest.raises(ReadError, match=r"streets\.zip holds an incomplete shapefile: 街道\.dbf must sit beside "
                                        r"街道\.shp in the zip"):
        read_table(z)


# --- through the importers ------------------------------------------------------------------------------------


@pytest.fixture()
def city(demo_db, tmp_path):
    path = tmp_path / "city.duckdb"
    copy_store(demo_db, path)
    return path


def _import(db, *args):
    res = CliRunner().invoke(main, ["import", *args, "--db", str(db), "--quiet"])
    assert res.exit_code == 0, res.output
    return res.output


def test_events_import_reports_the_reader_rejects(city, tmp_path):
    f = tmp_path / "events.csv"
    f.write_text("time,lng,lat,type,text\n"
                 '2025-03-01 09:00,112.94,28.23,0201,"unclosed\n'
                 "2025-03-02 09:00,112.95,28.22,0201,ok\n"
                 "2025-03-03 09:00,112.95,28.22,0201,ok2,extra\n"
                 "2025-03-04 09:00,112.95,28.22,0201,ok3\n", encoding="utf-8")
    before = int(Store(city).sql("SELECT count(*) AS n FROM events")["n"].iloc[0])
    out = _import(city, "events", str(f), "--source", "complaint")
    assert "rows read               4" in out and "loaded                  2" in out
    assert "rejected                2" in out
    assert "row 2: text: unclosed quote" in out and "row 4: column 6: 6 fields where the header has 5" in out
    texts = Store(city).sql("SELECT text FROM events ORDER BY event_id DESC LIMIT 2")["text"].tolist()
    assert sorted(texts) == ["ok", "ok3"]
    assert int(Store(city).sql("SELECT count(*) AS n FROM events")["n"].iloc[0]) == before + 2


def _districts(tmp_path):
    bowtie = shapely.Polygon([(112.90, 28.20), (112.95, 28.25), (112.95, 28.20), (112.90, 28.25)])
    f = tmp_path / "districts.geojson"
    gpd.GeoDataFrame({"code": ["X1", "X2"], "name": ["蝴蝶区", "方区"]},
                     geometry=[bowtie, shapely.box(113.20, 28.40, 113.24, 28.44)], crs=4326).to_file(f)
    return f, bowtie


def test_a_self_intersecting_district_is_refused_with_its_name(city, tmp_path):
    f, _ = _districts(tmp_path)
    events_before = Store(city).sql("SELECT district_code, count(*) AS n FROM events GROUP BY 1")
    out = _import(city, "areas", str(f), "--level", "district")
    assert "loaded                  1" in out and "rejected                1" in out
    assert ("row 1: geometry: invalid polygon: self-intersection at 112.925, 28.225 in the file's coordinates, "
            "in 蝴蝶区 (X1); fix it in the source file, or import with --repair") in out
    codes = set(Store(city).sql("SELECT code FROM areas WHERE level = 'district'")["code"])
    assert "X2" in codes and "X1" not in codes
    after = Store(city).sql("SELECT district_code, count(*) AS n FROM events GROUP BY 1")
    assert after.sort_values("district_code").reset_index(drop=True).equals(
        events_before.sort_values("district_code").reset_index(drop=True))  # no event moved


def test_repair_is_asked_for_and_reported(city, tmp_path):
    f, bowtie = _districts(tmp_path)
    out = _import(city, "areas", str(f), "--level", "district", "--repair")
    assert "loaded                  2" in out and "rejected                0" in out
    assert "warning: repaired invalid polygon: self-intersection at 112.925, 28.225" in out
    assert "in 蝴蝶区 (X1): now 2 polygon parts of" in out
    stored = Store(city).sql("SELECT ST_AsWKB(geom) AS wkb FROM areas WHERE code = 'X1'")["wkb"].iloc[0]
    geom = shapely.from_wkb(bytes(stored))
    assert geom.is_valid and shapely.get_num_geometries(geom) == 2
    # the two triangles of the bow tie, independently
    expected = shapely.union_all([shapely.Polygon([(112.90, 28.20), (112.925, 28.225), (112.90, 28.25)]),
                                  shapely.Polygon([(112.95, 28.20), (112.925, 28.225), (112.95, 28.25)])])
    assert shapely.symmetric_difference(geom, expected).area < 1e-12
    assert not bowtie.is_valid


def test_overlapping_districts_warn_with_the_overlap(city, tmp_path):
    f = tmp_path / "overlap.geojson"
    gpd.GeoDataFrame({"code": ["Y1", "Y2"], "name": ["甲区", "乙区"]},
                     geometry=[shapely.box(113.20, 28.40, 113.24, 28.44), shapely.box(113.23, 28.40, 113.27, 28.44)],
                     crs=4326).to_file(f)
    out = _import(city, "areas", str(f), "--level", "district")
    overlap = gpd.GeoSeries([shapely.box(113.23, 28.40, 113.24, 28.44)], crs=4326)
    km2 = float(overlap.to_crs(overlap.estimate_utm_crs()).area.iloc[0] / 1e6)
    assert f"warning: 1 pairs of district areas overlap, {km2:.4f} km² in all: Y1 and Y2 ({km2:.4f} km²)" in out


def test_inspections_outside_the_plausible_window_are_rejects(city, tmp_path):
    site = Store(city).sql("SELECT min(site_id) AS s FROM sites")["s"].iloc[0]
    f = tmp_path / "visits.csv"
    f.write_text(f"site,time,result\n{site},1950-01-01 09:00,符合\n{site},2025-03-02 09:00,符合\n", encoding="utf-8")
    out = _import(city, "inspections", str(f))
    assert "loaded                  1" in out
    assert "row 2: time: outside the plausible window 1990-01-01.." in out and ": '1950-01-01 09:00'" in out


@pytest.mark.parametrize("at", [2990, 1000])
def test_an_unclosed_quote_far_into_a_streamed_file(tmp_path, monkeypatch, at):
    """Near the end Arrow reads the rest of the file as one value (caught on the last row); further up the value
    outgrows a block and Arrow fails (the exact reader goes on from the batch holding it)."""
    monkeypatch.setattr(geo_csv, "BLOCK_BYTES", 4096)
    monkeypatch.setattr(geo_csv, "MAX_FIELD_CHARS", 2000)
    lines = [f"{i},v{i}" for i in range(3000)]
    lines[at] = f'{at},"v{at}'
    f = tmp_path / "late_quote.csv"
    f.write_text("code,name\n" + "\n".join(lines) + "\n", encoding="utf-8")
    reader = read_batches(f, rows=500)
    table = __import__("pyarrow").concat_tables(list(reader.batches))
    rows = table.column("__row__").to_pylist()
    assert rows == [i + 2 for i in range(3000) if i != at]
    assert table.column("name").to_pylist() == [f"v{i}" for i in range(3000) if i != at]
    assert [(r["row"], r["field"]) for r in reader.rejects] == [(at + 2, "name")]
    assert reader.rejects[0]["reason"].startswith(f"unclosed quote: the value of name opens a quote on line {at + 2}")
