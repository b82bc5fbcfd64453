"""geo.levels: one vocabulary of area levels (district → street → community → grid) for every layer."""

from __future__ import annotations

import pytest
from civicgrid.geo.errors import InvalidParameterError
from civicgrid.geo.levels import AREA_LEVELS, LEVEL_COLUMNS, LEVELS, PARENT_LEVEL, check_level, level_name


def test_levels_coarsest_first():
    assert LEVELS == ("district", "street", "community", "grid")
    assert LEVELS[:3] == AREA_LEVELS
    assert LEVEL_COLUMNS == {"district": "district_code", "street": "street_code", "community": "community_code",
                             "grid": "grid_code"}
    assert [PARENT_LEVEL[lv] for lv in LEVELS] == [None, *LEVELS[:-1]]
    assert level_name("street") == "街道" and level_name("grid", lang="en") == "Grid"


def test_check_level():
    assert check_level("grid") == "grid"
    with pytest.raises(InvalidParameterError, match="unknown level 'city'; use one of district, street, community, "):
        check_level("city")
    with pytest.raises(InvalidParameterError, match=r"use one of district, street, community$"):
        check_level("grid", levels=AREA_LEVELS)


def test_every_layer_uses_the_vocabulary():
    from civicgrid.geo import aggregate
    from civicgrid.maps import hotspot
    from civicgrid.sites import kpis, reports

    assert aggregate.LEVEL_COLUMNS is hotspot.LEVEL_COLUMNS is LEVEL_COLUMNS
    assert kpis.KPI_LEVELS == (*LEVELS, "category") == reports.LEVELS
    assert {k: v for k, v in kpis.UNIT_COLUMNS.items() if k in LEVELS} == LEVEL_COLUMNS
