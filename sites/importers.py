"""The importers, one per layer: the function, the fields it maps to columns and the options it takes.

One table, :data:`IMPORTERS`, serves everything that offers an import: ``civicgrid import LAYER`` builds its
command, options and ``--help`` from it, and ``POST /api/imports/{layer}`` looks the layer up in it and checks
the options given against it. A new importer is one entry here.

The layers, in the order a city is loaded: ``areas`` (:func:`civicgrid.grids.areas.import_areas`), ``grids``
(:func:`civicgrid.grids.areas.import_grids`), ``sites`` (:func:`civicgrid.sites.frame.import_sites`), ``events``
(:func:`civicgrid.sites.events.import_events`), ``inspections``
(:func:`civicgrid.sites.inspections.import_inspections`) and ``roads`` (:func:`civicgrid.grids.roads.import_roads`:
the gazetteer that places rows having only an address; load it before the events it places).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from civicgrid.geo.errors import InvalidParameterError, NotFoundError
from civicgrid.geo.events import SOURCES
from civicgrid.geo.import_report import ImportReport
from civicgrid.geo.levels import AREA_LEVELS
from civicgrid.geo.times import DATE_ORDERS, file_date_order
from civicgrid.grids.areas import AREA_FIELDS, GRID_FIELDS, import_areas, import_grids
from civicgrid.grids.roads import ROAD_FIELDS, import_roads
from civicgrid.sites.events import EVENT_FIELDS, TYPE_MODES, import_events
from civicgrid.sites.frame import SITE_FIELDS, import_sites
from civicgrid.sites.inspections import INSPECTION_FIELDS, import_inspections

#: What the column of each importer field holds (the help of the ``--FIELD`` flags).
FIELD_HELP: dict[str, str] = {
    "id": "record id (used to skip records already imported)", "lat": "latitude", "lng": "longitude",
    "time": "time", "type": "problem type (code, or 大类 / 小类 name)", "site": "site (id or name)",
    "text": "free text", "code": "code", "name": "name", "parent": "parent area's code",
    "category": "site category (code, Chinese or English name)",
    "result": "result (符合/不符合, pass/fail, a number of problems, or a score or severity with --fail-when)",
    "score": "inspection score (e.g. NYC points; higher is worse)",
    "critical": "whether a critical finding was recorded (a flag, a count of critical findings or a severity)",
    "kind": "kind of visit (routine, re-inspection, follow-up, 复查...); roads: kind of road (OSM highway)",
    "address": "address (kept; rows without coordinates keep it)", "unit": "responsible unit (责任单位)",
    "contact": "contact person",
    "phone": "contact phone", "active": "whether the site is in use (否, 停用, no, 0... mark it inactive)",
    "leader": "micro-grid leader (网格长)", "leader_phone": "the leader's phone", "households": "households",
    "status": "status word (已办结, closed, 处理中, open...)", "inspection": "id of the inspection that found it",
    "rectified": "when the problem was fixed (整改时间)", "closed": "when the case was closed (办结时间)",
    "inspector": "inspector (检查人)",
    "area": "district, street, community or micro-grid (code or name) locating rows without coordinates",
    "number_from": "first house number of the piece",
    "number_to": "last house number of the piece",
}


@dataclass(frozen=True)
class ImportOption:
    """An option of an importer besides the file, the database and the column mapping.

    Attributes
    ----------
    name
        The importer's keyword argument (and the CLI's ``--NAME`` option).
    help
        What it means, for ``--help`` and the API docs.
    choices
        The values it takes, when it is a choice.
    default
        The importer's default, shown in ``--help`` (None: no default shown).
    required
        Whether an import of the layer needs it.
    flag
        Whether it is a switch without a value (``--repair``).
    metavar
        The placeholder of its value in ``--help`` (e.g. ``COLUMN`` for an option naming a column).
    """

    name: str
    help: str
    choices: tuple[str, ...] = ()
    default: str | None = None
    required: bool = False
    metavar: str | None = None
    #: An on/off switch (``--NAME`` on the command line, ``true`` in a form) rather than a value.
    flag: bool = False


#: Every importer option, by name.
OPTIONS: dict[str, ImportOption] = {o.name: o for o in (
    ImportOption("level", "level of the areas in FILE", choices=AREA_LEVELS, required=True),
    ImportOption("source", "complaints (e.g. the 12345 hotline) or inspection hits", choices=SOURCES,
                 default="complaint"),
    ImportOption("point", 'one text column with "(lat, lon)" or "lat,lon"', metavar="COLUMN"),
    ImportOption("sheet", "sheet name of an XLSX file (default: the first)"),
    ImportOption("crs", "coordinates' system: wgs84, gcj02, bd09, cgcs2000 or EPSG:NNNN (default: the file's "
                        ".prj, else WGS84 with a warning)"),
    ImportOption("tz", "time zone of times written without an offset (default: the store's, Asia/Shanghai unless "
                       "it was created with CIVICGRID_TIMEZONE set)"),
    ImportOption("date_order", "how dates such as 01/03/2025 are read, for the whole column: dmy (day first: 1 "
                               "March) or mdy (month first: 3 January, US exports); needed only when no value "
                               "decides (a first field over 12 proves day first)", choices=DATE_ORDERS),
    ImportOption("types", "a type label that is no known type: open keeps the row (its label kept, listed by "
                          "`civicgrid types unmapped`), strict rejects it", choices=TYPE_MODES, default="open"),
    ImportOption("update", "rows whose id is stored already replace the stored events when they differ (their "
                           "location, cell and case recomputed; the report counts them as updated)", flag=True),
    ImportOption("encoding", "text encoding of CSV / shapefile attributes (default: detected)"),
    ImportOption("layer", "layer inside a GeoPackage, or shapefile inside a zip (needed when it holds several)"),
    ImportOption("repair", "repair invalid polygons (self-intersections…) and report what changed, instead of "
                           "rejecting them", flag=True),
    ImportOption("fail_when", 'which visits did not conform: SUBJECT OP VALUE, e.g. "score>=14", '
                              '"result>=significant", "status=Conditional Pass|Closed" (SUBJECT: result, score, '
                              'critical or a column)', metavar="RULE"),
    ImportOption("other_category", "category (code or name, e.g. 餐饮) for labels that are none of the known "
                                   "categories (default: keep each as the city's own category)", metavar="CAT"),
)}


@dataclass(frozen=True)
class Importer:
    """One layer's importer and what it takes.

    Attributes
    ----------
    layer
        The layer name (``civicgrid import LAYER``, ``/api/imports/LAYER``).
    function
        The importer: ``function(path, db=..., mapping=..., progress=..., **options)`` returns an
        :class:`~civicgrid.geo.import_report.ImportReport`.
    fields
        The fields it maps to columns (``mapping`` keys), as the importer names them.
    flags
        The fields with a ``--FIELD COLUMN`` flag of their own on the CLI (the others: ``--map FIELD=COLUMN``).
    options
        The names of the :data:`OPTIONS` it takes, in the order ``--help`` lists them.
    example
        An example of ``--map`` for this layer.
    summary
        One line saying what it imports.
    details
        More about the fields, for ``--help`` (may be empty).
    """

    layer: str
    function: Callable[..., ImportReport]
    fields: tuple[str, ...]
    flags: tuple[str, ...]
    options: tuple[str, ...]
    example: str
    summary: str
    details: str = ""
    #: The options the function takes as keyword arguments (default: all of :attr:`options`); the others
    #: (``date_order`` of an importer that does not take it) apply through :func:`~civicgrid.geo.times.file_date_order`.
    takes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.takes is None:
            object.__setattr__(self, "takes", self.options)
        self._check_names()

    def _check_names(self) -> None:
        unknown = [f for f in (*self.flags, self.example.split("=", 1)[0]) if f not in self.fields]
        unknown += [o for o in self.options if o not in OPTIONS]
        if unknown:
            msg = f"importer {self.layer!r} names fields or options it does not have: {', '.join(unknown)}"
            raise ValueError(msg)

    @property
    def help(self) -> str:
        """The command's help: the summary, then the details."""
        return f"{self.summary}\n\n{self.details}" if self.details else self.summary

    def check_options(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """The options of ``given`` that are set (not None), checked against the ones the importer takes.

        Raises
        ------
        InvalidParameterError
            An option it does not take, or a required option missing; the message lists its options.
        """
        options = {k: v for k, v in given.items() if v is not None}
        wrong = [k for k in options if k not in self.options]
        if wrong:
            msg = f"{self.layer} imports take no {', '.join(wrong)} (options: {', '.join(sorted(self.options))})"
            raise InvalidParameterError(msg)
        for name in self.options:
            opt = OPTIONS[name]
            if opt.required and not options.get(name):
                values = f"{', '.join(opt.choices[:-1])} or {opt.choices[-1]}" if opt.choices else "a value"
                msg = f"{self.layer} imports need {name}: {values}"
                raise InvalidParameterError(msg)
        return options

    def run(self, path: str | os.PathLike, *, db: str | os.PathLike, mapping: Mapping[str, str] | None = None,
            progress: bool = True, **options: Any) -> ImportReport:
        """Import ``path`` into ``db`` with :attr:`function`, after :meth:`check_options` on ``options``."""
        options = self.check_options(options)
        with file_date_order(options.get("date_order")):  # for importers that do not take it themselves
            if "date_order" not in self.takes:
                options.pop("date_order", None)
            return self.function(path, db=db, mapping=dict(mapping or {}), progress=progress, **options)


#: The importers, by layer, in the order a city is loaded (areas before grids before sites...).
IMPORTERS: dict[str, Importer] = {i.layer: i for i in (
    Importer("areas", import_areas, fields=tuple(AREA_FIELDS), flags=("code", "name", "parent"),
             options=("level", "crs", "encoding", "layer", "repair"), example="name=街道名称",
             summary="Import district, street (街道) or community (社区) polygons.",
             details="--parent names the column of the parent's code (an area of the level above, already "
                     "loaded); without it the area of the level above that contains it is used. Existing events, "
                     "sites and inspections are relocated afterwards."),
    Importer("grids", import_grids, fields=tuple(GRID_FIELDS), flags=("code", "name", "parent"),
             options=("crs", "encoding", "layer", "repair"), example="leader=网格长",
             summary="Import micro-grid (微网格) polygons.",
             details="--parent names the community code column; without it the containing community is used. "
                     "Leader and households: --map leader=网格长 --map leader_phone=电话 --map households=户数."),
    Importer("roads", import_roads, fields=tuple(ROAD_FIELDS), flags=("name",),
             options=("crs", "encoding", "layer"), example="number_from=起始门牌",
             summary="Import road names (and house numbers) that place rows having only an address.",
             details="FILE: an OpenStreetMap extract (.osm.pbf, .osm: named highway lines, and the addr:street + "
                     "addr:housenumber of points and buildings), an OSMnx graph (.graphml) or any line layer "
                     "(--name COLUMN, detected when not given; house-number ranges with --map number_from=… "
                     "number_to=…). Events imported later without coordinates but with an address (--map "
                     "address=…) are placed at the house number, where two roads meet (深南大道与香梅路交叉口) or on "
                     "the road, with that precision; never when two roads of the name fit (the district written "
                     "in the address or the row's area column picks one)."),
    Importer("sites", import_sites, fields=tuple(SITE_FIELDS), flags=("id", "name", "category", "lat", "lng"),
             options=("point", "sheet", "crs", "encoding", "layer", "other_category"), example="address=详细地址",
             summary="Import the sample frame (样本框 / 点位信息表).",
             details="Fields: --name, --category (code, Chinese or English name; other labels are kept as the "
                     "city's own categories, or mapped with --other-category), --id, and --map address=… "
                     "unit=… contact=… phone=… active=…. Geometry: --lat/--lng, --point, or the points, lines or "
                     "polygons of a spatial file; sites without coordinates but with an address are kept."),
    Importer("events", import_events, fields=tuple(EVENT_FIELDS),
             flags=("id", "lat", "lng", "time", "type", "site", "text"),
             options=("source", "point", "sheet", "crs", "tz", "date_order", "types", "update", "encoding",
                      "layer"),
             example="closed=办结时间",
             summary="Import complaints or inspection hits.",
             details="Fields: --time (required), --lat/--lng or --point, --id, --type (the column of the "
                     "city's type labels; several, most specific last: --type 一级分类,二级分类), --site, --text, "
                     "and --map status=… inspection=… rectified=… closed=… (when the problem was fixed and the "
                     "case closed, e.g. --map closed=办结时间) area=… address=…. Every row keeps its own type and "
                     "status labels; labels that are no known type load without a type (--types strict rejects "
                     "them): `civicgrid types unmapped` lists them, `civicgrid types map` maps them. Rows without "
                     "coordinates load unlocated, placed by --map area=COLUMN (a district, street, community or "
                     "micro-grid code or name) when given. Each new event gets its case in the same transaction."),
    Importer("inspections", import_inspections, fields=tuple(INSPECTION_FIELDS),
             flags=("id", "site", "time", "result", "lat", "lng"),
             options=("point", "sheet", "crs", "tz", "date_order", "encoding", "layer", "fail_when"),
             example="inspector=检查人",
             takes=("point", "sheet", "crs", "tz", "encoding", "layer", "fail_when"),
             summary="Import inspection visits: --site, --time, --result (符合/不符合, pass/fail, a number of "
                     "problems, or a score or severity with --fail-when).",
             details="The inspector: --map inspector=检查人; a score: --result 分数 --fail-when \"score>=14\"; "
                     "critical findings: --map critical=COLUMN; the kind of visit: --map kind=COLUMN. Visits "
                     "without coordinates take their site's location."),
)}


def get_importer(layer: str) -> Importer:
    """The importer of ``layer``.

    Raises
    ------
    NotFoundError
        No importer for ``layer``; the message lists the layers.
    """
    if layer not in IMPORTERS:
        msg = f"unknown layer {layer!r}; layers: {', '.join(IMPORTERS)}"
        raise NotFoundError(msg)
    return IMPORTERS[layer]
