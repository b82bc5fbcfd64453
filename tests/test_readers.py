"""File readers: attribute tables as text, the readers' own columns never clash with a file's."""

from __future__ import annotations

import json

import geopandas as gpd
import shapely
from civicgrid.geo.readers import read_table

BOXES = [shapely.box(112.90, 28.20, 112.91, 28.21), shapely.box(112.91, 28.20, 112.92, 28.21)]


def test_a_column_named_geometry_does_not_hide_the_geometry(tmp_path):
    """A GeoParquet whose geometry column is ``geom`` and which also has a text column ``geometry``."""
    gdf = gpd.GeoDataFrame({"code": ["A", "B"], "geometry_text": ["甲", "乙"], "n": [1, 2]},
                           geometry=gpd.GeoSeries(BOXES, crs=4326)).rename_geometry("geom")
    f = tmp_path / "areas.geoparquet"
    gdf.rename(columns={"geometry_text": "geometry"}).to_parquet(f)
    res = read_table(f)
    assert res.table.column_names == ["code", "geometry_2", "n", "geometry", "__row__"]
    assert res.table.column("geometry_2").to_pylist() == ["甲", "乙"]
    assert res.table.column("n").to_pylist() == ["1", "2"]
    assert shapely.equals(shapely.from_wkb(res.table.column("geometry").to_numpy(zero_copy_only=False)),
                          BOXES).all()
    assert any("'geometry' → 'geometry_2'" in w for w in res.warnings)


def test_features_without_attributes_keep_their_rows(tmp_path):
    f = tmp_path / "bare.geojson"
    f.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(b)} for b in BOXES]}))
    res = read_table(f)
    assert res.table.column_names == ["geometry", "__row__"] and res.table.num_rows == 2
    p = tmp_path / "bare.geoparquet"
    gpd.GeoDataFrame(geometry=BOXES, crs=4326).to_parquet(p)
    res = read_table(p)
    assert res.table.column_names == ["geometry", "__row__"] and res.table.column("__row__").to_pylist() == [1, 2]
