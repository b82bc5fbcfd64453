"""Response models of the main endpoints: the shapes ``/docs`` and ``/openapi.json`` show.

Each model lists the members of the JSON an endpoint answers, in the order it writes them. Rows whose columns
come from a table (cases, KPI rows, events' properties...) allow more members than they declare
(``extra="allow"``), so that a new column is not a broken response. Numbers that may be written as integers or
decimals are :data:`Number`; a ``None`` member is written as ``null``.

Most endpoints write their JSON themselves (:mod:`civicgrid.api.responses`: compact, NaN as null, times as ISO
text) and use these models for the documentation; the endpoints that return a dict (risk, patrol plans) are
validated and serialised by FastAPI through them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

#: A JSON number written as an integer or a decimal, as the data has it (kept as given, not converted).
Number = float | int


class Open(BaseModel):
    """A JSON object with the members declared and possibly more."""

    model_config = ConfigDict(extra="allow")


# --- GeoJSON ---------------------------------------------------------------------------------------------------


class Feature(BaseModel):
    """A GeoJSON feature (WGS84 longitude, latitude unless the collection's ``crs_note`` says otherwise)."""

    type: Literal["Feature"] = "Feature"
    geometry: dict[str, Any] | None = Field(..., description="a GeoJSON geometry (null for none)")
    properties: dict[str, Any]


class FeatureCollection(Open):
    """A GeoJSON FeatureCollection with top-level members of its own (a summary of the view)."""

    type: Literal["FeatureCollection"] = "FeatureCollection"
    crs_note: str | None = Field(None, description="present when the coordinates are not WGS84 (crs=gcj02)")
    features: list[Feature]


# --- heatmap, statistics, hotspots -----------------------------------------------------------------------------


class HeatmapSummary(BaseModel):
    """What a heatmap view counts."""

    res: int = Field(..., description="H3 resolution")
    metric: str = Field(..., description="count, density (events per km²) or sites")
    n_cells: int
    total_events: int
    max: Number = Field(..., description="the largest cell value")


class HeatmapCells(HeatmapSummary):
    """``GET /api/heatmap`` (``format=cells``): each cell as ``[h3 hex, value]``."""

    cells: list[tuple[str, Number]] = Field(..., examples=[[["8841890013fffff", 6]]])


class HeatmapGeoJSON(FeatureCollection, HeatmapSummary):
    """``GET /api/heatmap`` (``format=geojson``): hexagons with ``h3_hex``, ``value``, ``count``, ``sites``."""


class AreaStat(Open):
    """One area's events."""

    code: str
    label: str = Field(..., description="the name in the asked language")
    name: str
    name_en: str | None
    level: str
    parent_code: str | None
    area_km2: float | None
    count: int = Field(..., description="events")
    sites: int = Field(..., description="distinct sample-frame sites with events")
    complaints: int
    hits: int = Field(..., description="inspection hits")
    open: int = Field(..., description="events not closed")
    density: float | None = Field(..., description="events per km²")
    share: float | None = Field(..., description="share of the level's events")


class AreaStats(BaseModel):
    """``GET /api/stats/areas``: the areas of a level, by count descending."""

    level: str
    total_events: int
    areas: list[AreaStat]


class HotspotSummary(BaseModel):
    """What a Gi* view found."""

    res: int
    k: int = Field(..., description="neighbourhood rings")
    alpha: float
    n_cells: int
    n_hot: int
    n_cold: int
    labels: dict[str, str] = Field(..., description="class -> label in the asked language")


class HotspotCells(HotspotSummary):
    """``GET /api/hotspots`` (``format=cells``): one row per cell, its members named by ``columns``."""

    columns: list[str] = Field(..., examples=[["h3_hex", "count", "z", "p", "p_fdr", "cls"]])
    cells: list[tuple[str, int, float | None, float | None, float | None, str]]


class HotspotGeoJSON(FeatureCollection, HotspotSummary):
    """``GET /api/hotspots`` (``format=geojson``): hexagons with ``h3_hex``, ``count``, ``z``, ``p``, ``p_fdr``,
    ``cls`` and ``label``."""


# --- events ----------------------------------------------------------------------------------------------------


class EventProperties(Open):
    """An event's members."""

    event_id: int
    source: str = Field(..., description="complaint or inspection")
    external_id: str | None
    time: str
    problem_type: str | None
    type_name: str | None
    major_code: str | None
    major_name: str | None
    source_type: str | None = Field(..., description="the city's own type label, as in its file")
    source_status: str | None = Field(..., description="the city's own status label, as in its file")
    address: str | None = Field(..., description="the address given in the city's file")
    status: str
    deadline: str | None
    rectified_at: str | None
    closed_at: str | None
    reopened: int | None
    rebound_of: int | None
    site_id: int | None
    site_name: str | None
    category_code: str | None
    category_name: str | None
    inspection_id: int | None
    text: str | None
    h3_hex: str | None
    grid_code: str | None
    community_code: str | None
    street_code: str | None
    district_code: str | None


class EventFeature(Feature):
    """One event as a point."""

    properties: EventProperties  # type: ignore[assignment]


class EventsPage(FeatureCollection):
    """``GET /api/events``: a page of the filtered events."""

    total: int = Field(..., description="events matching the filters (all pages)")
    limit: int
    offset: int
    order: str
    features: list[EventFeature]  # type: ignore[assignment]


# --- risk ------------------------------------------------------------------------------------------------------


class RiskComponent(BaseModel):
    """One term of a site's risk score."""

    component: str
    label: str
    value: Number | None
    transform: str
    weight: Number | None
    contribution: Number | None = Field(..., description="in logit units")


class SiteRisk(Open):
    """A site's risk, rank, reason and components (largest contribution first)."""

    site_id: int
    name: str | None = None
    category_code: str | None = None
    category_name: str | None = None
    grid_code: str | None = None
    lng: float | None = None
    lat: float | None = None
    risk: Number | None = Field(None, description="the chance that the next inspection finds a problem")
    rank: int | None = Field(None, description="among the active sites (null for an inactive site)")
    base: Number | None = None
    reason: str | None = None
    model: str | None = None
    site_visits: Number | None = None
    components: list[RiskComponent] = []


class RiskList(BaseModel):
    """``GET /api/risk``: active sites, highest risk first."""

    as_of: str
    notes: list[str]
    n_scored: int
    n_matching: int
    model: dict[str, Any] = Field(..., description="the model used: kind, weights, training counts and AUC...")
    sites: list[SiteRisk]


class SiteRiskDetail(Open):
    """``GET /api/risk/{site_id}``: one site's risk and its components (the members of :class:`SiteRisk`)."""

    as_of: str
    model: str | None = Field(None, description="the kind of model that scored the site")
    site_id: int
    name: str | None = None
    category_code: str | None = None
    category_name: str | None = None
    grid_code: str | None = None
    lng: float | None = None
    lat: float | None = None
    risk: Number | None = None
    rank: int | None = Field(None, description="among the active sites (null for an inactive site)")
    base: Number | None = None
    reason: str | None = None
    site_visits: Number | None = None
    components: list[RiskComponent] = []


# --- cases -----------------------------------------------------------------------------------------------------


class Case(Open):
    """A problem case."""

    case_id: int
    event_id: int | None
    source: str | None
    problem_type: str | None
    source_type: str | None = Field(None, description="the city's own type label of a case without a problem "
                                                      "type (as in its file)")
    site_id: int | None
    category_code: str | None
    grid_code: str | None
    community_code: str | None
    street_code: str | None
    district_code: str | None
    state: str = Field(..., description="found, registered, dispatched, rectified or closed")
    found_at: str | None
    deadline: str | None
    unit: str | None
    unit_code: str | None
    dispatched_at: str | None
    rectified_at: str | None
    closed_at: str | None
    reworks: int | None
    rebound_of: int | None
    photo: str | None
    updated_at: str | None


class CaseList(BaseModel):
    """``GET /api/cases``: one page of cases, newest first."""

    count: int = Field(..., description="cases on this page")
    total: int = Field(..., description="cases matching the filters (all pages)")
    limit: int
    offset: int
    next_offset: int | None = Field(None, description="offset of the next page; null on the last page")
    cases: list[Case]


class CaseLogEntry(Open):
    """One move of a case."""

    log_id: int
    changed_at: str
    actor: str | None
    from_state: str | None
    to_state: str
    note: str | None
    unit: str | None
    photo: str | None


class CaseDetail(Case):
    """One case with its audit trail and its legal next states."""

    log: list[CaseLogEntry]
    next: list[str]


class CaseLog(BaseModel):
    """``GET /api/cases/{case_id}/log``."""

    case_id: int
    log: list[CaseLogEntry]


# --- KPIs ------------------------------------------------------------------------------------------------------


class KpiRow(Open):
    """One unit's rectification KPIs (definitions in the README, "Cases and KPIs")."""

    code: str | None
    name: str | None
    found: int
    rectified: int
    rectification_rate: float | None
    due: int
    closed: int
    closed_on_time: int
    closure_rate: float | None
    on_time_closure_rate: float | None
    reworked: int
    rework_rate: float | None
    rebounds: int
    rebound_rate: float | None
    mean_hours_to_rectify: float | None
    median_hours_to_rectify: float | None
    open: int
    overdue: int
    no_deadline: int = Field(..., description="found cases without a deadline (no problem type: a city's label "
                             "not mapped yet); they never fall due, so no closure rate or overdue count has them")


class KpiTable(BaseModel):
    """``GET /api/kpis``: the KPIs per unit of a level, and their totals."""

    level: str
    start: str
    end: str = Field(..., description="the last day (inclusive) or the exclusive end time")
    columns: list[str]
    rows: list[KpiRow]
    totals: KpiRow


class SiteFlag(Open):
    """A site's flag (红旗 / 白旗) with its counts and reason."""

    site_id: int
    name: str | None
    category_code: str | None
    category: str | None
    grid_code: str | None
    community_code: str | None
    street_code: str | None
    district_code: str | None
    responsible_unit: str | None
    lng: float | None
    lat: float | None
    inspections: int
    found: int
    due: int
    closed_on_time: int
    overdue: int
    rebounds: int
    on_time_rate: float | None
    flag: str = Field(..., description="red, white or none")
    flag_label: str
    reason: str


class SiteFlags(BaseModel):
    """``GET /api/kpis/flags``."""

    as_of: str
    window_days: int
    counts: dict[str, int] = Field(..., description="sites of the area (default the city) per flag: red, white "
                                                    "and none, before the flag filter")
    sites: list[SiteFlag]


# --- the assessment simulator ----------------------------------------------------------------------------------


class RateSummary(Open):
    """Expected and simulated conformity rate (符合率) of drawn sites."""

    n_sites: int
    k: int = Field(..., description="sites drawn")
    expected: float | None
    simulated: float | None
    low: float | None
    high: float | None
    p_below: float | None = Field(..., description="simulated chance of a rate below the threshold")
    p_below_exact: float | None
    expected_nonconforming: float | None


class CategoryRate(RateSummary):
    """One category's rate."""

    category_code: str
    name: str


class FixSite(Open):
    """A site whose fixing raises the expected overall rate (most first)."""

    rank: int
    site_id: int
    name: str | None
    category_code: str | None
    category: str | None
    grid_code: str | None
    street_code: str | None
    p: float | None = Field(..., description="chance the site conforms")
    open: int
    overdue: int
    hits: int
    gain_category: float | None
    gain: float | None
    cumulative_gain: float | None


class Assessment(BaseModel):
    """``GET /api/simulator``: the assessors' visit, simulated."""

    as_of: str
    method: str
    runs: int
    threshold: float
    level: float
    aggregate: str
    overall: RateSummary
    categories: list[CategoryRate]
    fix: list[FixSite]
    overall_after_fix: dict[str, Any]
    notes: list[str]


# --- patrol plans ----------------------------------------------------------------------------------------------


class PatrolStop(Open):
    """One stop of a route: when, how long, the site's risk and why it was chosen."""

    seq: int
    site_id: int
    name: str | None = None
    address: str | None = None
    category_code: str | None = None
    category: str | None = None
    category_zh: str | None = None
    category_en: str | None = None
    grid_code: str | None = None
    grid_name: str | None = None
    lng: Number | None = None
    lat: Number | None = None
    arrival: str | None = None
    start_time: str | None = None
    departure: str | None = None
    arrival_min: Number | None = None
    travel_min: Number | None = None
    wait_min: Number | None = None
    service_min: Number | None = None
    risk: Number | None = None
    must_visit: bool | None = None
    tw_from: Any = None
    tw_to: Any = None
    reason: str | None = None
    reasons: list[dict[str, Any]] | None = None
    components: dict[str, Any] | None = None


class PatrolRoute(Open):
    """One inspector's route."""

    inspector: str
    mode: str | None = None
    shift_start: str | None = None
    shift_minutes: Number | None = None
    start: list[Number] | None = Field(None, description="[lng, lat]")
    end: list[Number] | None = Field(None, description="[lng, lat]")
    end_time: str | None = None
    stops: list[PatrolStop]
    return_travel_min: Number | None = None
    totals: dict[str, Any] | None = None
    path: list[list[Number]] | None = Field(None, description="the street path [[lng, lat], ...] (with a network)")


class PatrolPlan(Open):
    """``POST /api/patrols/plan`` and ``GET /api/patrols/{plan_id}``: a stored patrol plan."""

    plan_id: str | None = None
    created_at: str | None = None
    date: str
    solver: str | None = None
    travel_source: str | None = None
    solve_seconds: Number | None = None
    objective: Number | None = None
    params: dict[str, Any] | None = Field(None, description="the request, as planned")
    totals: dict[str, Any] | None = None
    routes: list[PatrolRoute]
    unvisited_must: list[dict[str, Any]] | None = Field(None, description="must-visits not planned today: why, "
                                                                     "their urgency rank and planned_date")
    unlocated: list[dict[str, Any]] | None = Field(None, description="active sites left out of the routes: no "
                                                   "coordinates and no area to place them in (site_id, name, reason)")
    backlog: dict[str, Any] | None = Field(None, description="every must-visit by urgency with the working day it "
                                                             "is planned for or the reason it is not; the load per "
                                                             "day; the later days' routes")
    notes: list[str] | None = None
    risk_model: str | None = None
    timezone: str | None = None
    candidates: dict[str, Any] | None = None


# --- imports ---------------------------------------------------------------------------------------------------


class ImportResult(BaseModel):
    """``POST /api/imports/{layer}``: the import report (rows read = loaded + duplicates + rejected)."""

    layer: str
    file: str | None = Field(..., description="the file's name as uploaded")
    format: str
    encoding: str | None
    crs: str | None
    columns: dict[str, str] = Field(..., description="field -> the column it was read from")
    rows_read: int
    loaded: int
    updated: int | None = Field(None, description="events with update: stored rows replaced by rows that differ")
    duplicates: int
    rejected: int
    outside_grids: int = Field(..., description="rows kept without a micro-grid")
    no_grids: bool = Field(False, description="the store had no micro-grid yet: every row is outside grids")
    rejects: list[dict[str, Any]] = Field(..., description="every rejected row: row, field, reason")
    warnings: list[str]
    import_id: int | None
    cases_created: int | None = Field(..., description="events: the cases created with them")
    rebounds_linked: int | None
    unmapped_types: dict[str, int] | None = Field(
        None, description="events: type labels of loaded rows that are no known type (label -> rows)")
    type_suggestions: dict[str, list[str]] | None = Field(
        None, description="events: the closest known types of each unmapped label")
    located: int | None = Field(None, description="events: rows located by their coordinates")
    located_by_area: int | None = Field(None, description="events: rows without coordinates located by their area")
    located_by_address: int | None = Field(None, description="events: rows located by their address")
    unlocated: int | None = Field(None, description="events: rows kept without a location (never on a map)")
    address_precision: dict[str, int] | None = Field(
        None, description="events: rows placed by their address, by precision (address, number, intersection, road)")
    addresses_ambiguous: int | None = Field(
        None, description="events: addresses naming roads that fit several places (not placed)")
    road_numbers: int | None = Field(None, description="roads: house numbers loaded besides the roads")


class ImportEntry(BaseModel):
    """One import of the store (``civicgrid imports list``); times are the store's wall-clock time."""

    import_id: int
    layer: str
    file: str | None
    started_at: str | None
    finished_at: str | None
    rows_read: int | None
    loaded: int | None
    updated: int = Field(..., description="events with update: stored rows replaced")
    duplicates: int | None
    rejected: int | None
    undone_at: str | None = Field(None, description="when it was undone (null: it was not)")


class ImportList(BaseModel):
    """``GET /api/imports``: every import, oldest first."""

    imports: list[ImportEntry]


class ImportUndone(BaseModel):
    """``POST /api/imports/{import_id}/undo``: what the undo removed."""

    import_id: int
    layer: str
    events: int
    cases: int
    sites: int
    inspections: int
    roads: int = Field(0, description="roads: the pieces of road removed (their house numbers too)")
    undone_at: str = Field(..., description="the store's wall-clock time, as finished_at")


# --- users -----------------------------------------------------------------------------------------------------


class User(Open):
    """A user (never the token)."""

    user_id: int
    name: str
    role: str
    created_at: str | None
    active: bool


class UserList(BaseModel):
    """``GET /api/users``."""

    users: list[User]


class NewUser(User):
    """``POST /api/users``: the user and its token, shown this once."""

    token: str


# --- the city's taxonomy (api/routers/types.py) -------------------------------------------------------------------


class ProblemType(Open):
    """A problem type (小类) with its major class, deadline, events and the source labels mapped to it."""

    code: str
    major_code: str
    major_zh: str | None
    major_en: str | None
    name_zh: str
    name_en: str | None
    deadline_value: float | None
    deadline_unit: str | None = Field(..., description="working_days or working_hours")
    events: int
    labels: str | None = Field(..., description="source labels mapped to it, '; '-separated")


class ProblemTypes(BaseModel):
    """``GET /api/types``."""

    types: list[ProblemType]


class UnmappedLabel(Open):
    """A source label whose events have no type."""

    source: str
    label: str
    events: int
    suggestions: list[str] = Field(..., description="the closest known types: 'code 名称 (name)'")


class UnmappedLabels(BaseModel):
    """``GET /api/types/unmapped``."""

    labels: list[UnmappedLabel]


class LabelMapped(Open):
    """A label mapped to a type: the events and cases given it."""

    label: str
    code: str
    source: str | None
    events: int
    cases: int


class LabelsMapped(BaseModel):
    """``POST /api/types/import-map``."""

    mapped: list[LabelMapped]
