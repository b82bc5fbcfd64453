"""Versioned schema of the civicgrid store: the DuckLake tables, and the migrations of the old single-file stores.

The store is a DuckLake (:mod:`civicgrid.geo.store`). DuckLake keeps no keys, unique or check constraints,
indexes or sequences: ids are assigned by the writer (one writer at a time, see :func:`~civicgrid.geo.store.
writing`), uniqueness and allowed values are checked by the code that writes (``users.name``, case states, ...).
:data:`LAKE_SCHEMA` creates a new store. :data:`MIGRATIONS` are the statements that brought an old single
DuckDB file (schema versions 1 to 5) up to version 5; :func:`~civicgrid.geo.store.migrate_file` runs them on a
copy before moving the data into a DuckLake.
"""

from __future__ import annotations

import re

#: Schema version written by this civicgrid: 6 is the first DuckLake store. Older stores (single DuckDB files,
#: versions 1 to 5) are migrated by ``civicgrid migrate``; newer ones are refused.
SCHEMA_VERSION = 11

#: The last version of the single-file store (what :data:`MIGRATIONS` bring a file up to).
FILE_SCHEMA_VERSION = 5

#: Fine H3 resolution stored for every event, site and inspection; coarser
#: resolutions are derived in SQL with :func:`h3_parent` (bit arithmetic).
H3_RES = 12

# Version 1: the layers themselves.
_V1 = [
    """
    CREATE TABLE IF NOT EXISTS meta (
        key VARCHAR PRIMARY KEY,
        value VARCHAR
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS areas (
        code VARCHAR PRIMARY KEY,
        name VARCHAR NOT NULL,
        name_en VARCHAR,
        level VARCHAR NOT NULL CHECK (level IN ('district', 'street', 'community')),
        parent_code VARCHAR,
        area_km2 DOUBLE,
        geom GEOMETRY
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS grids (
        code VARCHAR PRIMARY KEY,
        name VARCHAR,
        community_code VARCHAR,
        street_code VARCHAR,
        district_code VARCHAR,
        leader_name VARCHAR,
        leader_phone VARCHAR,
        households INTEGER,
        area_km2 DOUBLE,
        geom GEOMETRY
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS site_categories (
        code VARCHAR PRIMARY KEY,
        name_zh VARCHAR NOT NULL,
        name_en VARCHAR NOT NULL,
        group_code VARCHAR,
        group_zh VARCHAR,
        group_en VARCHAR,
        geom_kind VARCHAR NOT NULL CHECK (geom_kind IN ('point', 'line', 'area')),
        service_minutes DOUBLE DEFAULT 12
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS problem_types (
        code VARCHAR PRIMARY KEY,
        major_code VARCHAR NOT NULL,
        major_zh VARCHAR,
        major_en VARCHAR,
        name_zh VARCHAR NOT NULL,
        name_en VARCHAR,
        deadline_value DOUBLE,
        deadline_unit VARCHAR CHECK (deadline_unit IN ('working_days', 'working_hours'))
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS sites (
        site_id BIGINT PRIMARY KEY,
        external_id VARCHAR,
        name VARCHAR NOT NULL,
        address VARCHAR,
        category_code VARCHAR NOT NULL,
        responsible_unit VARCHAR,
        contact VARCHAR,
        phone VARCHAR,
        active BOOLEAN DEFAULT TRUE,
        lng DOUBLE,
        lat DOUBLE,
        h3 UBIGINT,
        grid_code VARCHAR,
        community_code VARCHAR,
        street_code VARCHAR,
        district_code VARCHAR,
        dedup_key VARCHAR,
        import_id INTEGER,
        geom GEOMETRY
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS inspections (
        inspection_id BIGINT PRIMARY KEY,
        external_id VARCHAR,
        site_id BIGINT,
        time TIMESTAMP NOT NULL,
        inspector VARCHAR,
        conforming BOOLEAN,
        problems_found INTEGER,
        lng DOUBLE,
        lat DOUBLE,
        h3 UBIGINT,
        grid_code VARCHAR,
        community_code VARCHAR,
        street_code VARCHAR,
        district_code VARCHAR,
        dedup_key VARCHAR,
        import_id INTEGER
    )
    """,
    # events is the large table (up to 10M rows): no PK/unique index, ids are
    # assigned by the importer and duplicates are removed by anti-join.
    """
    CREATE TABLE IF NOT EXISTS events (
        event_id BIGINT NOT NULL,
        source VARCHAR NOT NULL,
        external_id VARCHAR,
        problem_type VARCHAR,
        time TIMESTAMP NOT NULL,
        status VARCHAR,
        site_id BIGINT,
        inspection_id BIGINT,
        text VARCHAR,
        lng DOUBLE,
        lat DOUBLE,
        h3 UBIGINT,
        grid_code VARCHAR,
        community_code VARCHAR,
        street_code VARCHAR,
        district_code VARCHAR,
        deadline TIMESTAMP,
        rectified_at TIMESTAMP,
        closed_at TIMESTAMP,
        reopened INTEGER DEFAULT 0,
        dedup_key VARCHAR,
        import_id INTEGER
    )
    """,
    # h3_parent: coarser cell of a stored cell id, by bit arithmetic on the
    # H3 index layout (resolution in bits 52-55; digit r in bits 3*(15-r)..+2;
    # unused digits are all ones).
    """
    CREATE OR REPLACE MACRO h3_parent(cell, res) AS CAST(
        (CAST(cell AS UBIGINT) & ~(CAST(15 AS UBIGINT) << 52))
        | (CAST(res AS UBIGINT) << 52)
        | ((CAST(1 AS UBIGINT) << (3 * (15 - res))) - 1) AS UBIGINT)
    """,
    "CREATE OR REPLACE MACRO h3_hex(cell) AS lower(hex(cell))",
]

# Version 2: an import log, and the link from a rebound case to the case it repeats.
_V2 = [
    """
    CREATE TABLE IF NOT EXISTS imports (
        import_id INTEGER PRIMARY KEY,
        layer VARCHAR NOT NULL,
        file VARCHAR,
        started_at TIMESTAMP,
        finished_at TIMESTAMP,
        rows_read BIGINT,
        loaded BIGINT,
        duplicates BIGINT,
        rejected BIGINT,
        outside_grids BIGINT,
        report_json VARCHAR
    )
    """,
    "ALTER TABLE events ADD COLUMN IF NOT EXISTS rebound_of BIGINT",
]

# Version 3: problem cases (lifecycle, audit trail), users and settings (sites/cases.py, geo/users.py own these).
# Like events, cases and case_log carry no index (they grow with events); ids are assigned by the writer.
_V3: list[str] = [
    """
    CREATE TABLE IF NOT EXISTS cases (
        case_id BIGINT NOT NULL,
        event_id BIGINT NOT NULL,
        source VARCHAR,
        problem_type VARCHAR,
        site_id BIGINT,
        category_code VARCHAR,
        grid_code VARCHAR,
        community_code VARCHAR,
        street_code VARCHAR,
        district_code VARCHAR,
        state VARCHAR NOT NULL CHECK (state IN ('found', 'registered', 'dispatched', 'rectified', 'closed')),
        found_at TIMESTAMP NOT NULL,
        deadline TIMESTAMP,
        unit VARCHAR,
        unit_code VARCHAR,
        dispatched_at TIMESTAMP,
        rectified_at TIMESTAMP,
        closed_at TIMESTAMP,
        reworks INTEGER NOT NULL DEFAULT 0,
        rebound_of BIGINT,
        photo VARCHAR,
        updated_at TIMESTAMP
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS case_log (
        log_id BIGINT NOT NULL,
        case_id BIGINT NOT NULL,
        changed_at TIMESTAMP NOT NULL,
        actor VARCHAR NOT NULL,
        from_state VARCHAR,
        to_state VARCHAR NOT NULL,
        note VARCHAR,
        unit VARCHAR,
        photo VARCHAR
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS users (
        user_id INTEGER PRIMARY KEY,
        name VARCHAR NOT NULL UNIQUE,
        role VARCHAR NOT NULL CHECK (role IN ('viewer', 'inspector', 'admin')),
        token_hash VARCHAR NOT NULL UNIQUE,
        created_at TIMESTAMP NOT NULL,
        active BOOLEAN NOT NULL DEFAULT TRUE
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS holidays (
        date DATE PRIMARY KEY,
        kind VARCHAR NOT NULL CHECK (kind IN ('holiday', 'workday')),
        name VARCHAR,
        source VARCHAR
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS settings (
        key VARCHAR PRIMARY KEY,
        value VARCHAR NOT NULL
    )
    """,
]


def _holiday_seed() -> str:
    """The statement seeding ``holidays`` from the editable ``data/holidays.csv`` (official 调休 calendar)."""
    import csv
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "data" / "holidays.csv"
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))

    def q(text: str) -> str:
        return "'" + text.replace("'", "''") + "'"

    values = ", ".join(f"(DATE {q(r['date'])}, {q(r['kind'])}, {q(r['name'])}, {q(r['source'])})" for r in rows)
    return f"INSERT OR IGNORE INTO holidays VALUES {values}"


_V3.append(_holiday_seed())

# Version 4: stored patrol plans (sites/patrol.py owns these): one row per plan, the whole plan document as JSON
# so that a plan made by one process (the CLI, one service worker) is shown and exported by any other.
_V4: list[str] = [
    """
    CREATE TABLE IF NOT EXISTS patrol_plans (
        plan_id VARCHAR PRIMARY KEY,
        created_at TIMESTAMP NOT NULL,
        plan_date DATE,
        solver VARCHAR,
        travel_source VARCHAR,
        inspectors INTEGER,
        stops INTEGER,
        total_risk DOUBLE,
        params_json VARCHAR NOT NULL,
        plan_json VARCHAR NOT NULL
    )
    """,
]

# Version 5: files written while versions 3 and 4 were still empty get their case, user and patrol tables
# (every statement above is idempotent), and ``h3_parent`` is re-created to return UBIGINT in every case.
_V5: list[str] = [*_V3, *_V4, *[s for s in _V1 if "MACRO" in s]]

#: Statements that bring a single-file store from version ``v - 1`` to version ``v`` (up to 5).
MIGRATIONS: dict[int, list[str]] = {1: _V1, 2: _V2, 3: _V3, 4: _V4, 5: _V5}

_CONSTRAINTS = [
    (re.compile(r"\s+PRIMARY KEY"), ""),
    (re.compile(r"\s+UNIQUE"), ""),
    (re.compile(r"\s+CHECK \((?:[^()]|\([^()]*\))*\)"), ""),
    (re.compile(r"INSERT OR IGNORE INTO"), "INSERT INTO"),
]


def _lake_statement(statement: str) -> str:
    """A statement of the file schema without what a DuckLake does not keep (keys, unique and check constraints)."""
    for pattern, repl in _CONSTRAINTS:
        statement = pattern.sub(repl, statement)
    return statement


# 7: a city's own taxonomy and records without coordinates (issue 13): each event keeps the source's type
# and status labels (and a "… - Dup" flag) and its address; ``located_by`` says how it was placed (point,
# address, area; NULL: unlocated), ``location_confidence`` how sure an address match is. ``type_labels`` maps
# a source label to a problem type for every import of that source (NULL source: every source).
_V7: list[str] = [
    "ALTER TABLE events ADD COLUMN source_type VARCHAR",
    "ALTER TABLE events ADD COLUMN source_status VARCHAR",
    "ALTER TABLE events ADD COLUMN source_duplicate BOOLEAN",
    "ALTER TABLE events ADD COLUMN address VARCHAR",
    "ALTER TABLE events ADD COLUMN located_by VARCHAR",
    "ALTER TABLE events ADD COLUMN location_confidence DOUBLE",
    """
    CREATE TABLE IF NOT EXISTS type_labels (
        source VARCHAR,
        label VARCHAR NOT NULL,
        code VARCHAR NOT NULL,
        mapped_at TIMESTAMP
    )
    """,
]

# 8: what real inspection records say besides pass/fail (issue 16): the score (e.g. NYC points, higher is
# worse), whether a critical / crucial finding was recorded, and the kind of visit (routine, re-inspection...)
_V8: list[str] = [
    "ALTER TABLE inspections ADD COLUMN score DOUBLE",
    "ALTER TABLE inspections ADD COLUMN critical BOOLEAN",
    "ALTER TABLE inspections ADD COLUMN kind VARCHAR",
]

# 9: visits recorded on the inspectors' field page (issue 15): the inspector's note, the photo (a file beside the
# store, see civicgrid.sites.visits), the idempotency key the phone sent with the visit (a resend of the same key
# records nothing new) and the patrol plan it belongs to.
_V9: list[str] = [
    "ALTER TABLE inspections ADD COLUMN note VARCHAR",
    "ALTER TABLE inspections ADD COLUMN photo VARCHAR",
    "ALTER TABLE inspections ADD COLUMN visit_key VARCHAR",
    "ALTER TABLE inspections ADD COLUMN plan_id VARCHAR",
]

# 10: roads (issue 15, issue 13): one row per piece of street, for patrol travel times and for placing records that
# have only an address. ``kind`` (the demo's arterial, secondary, local, alley, entrance — the lane from a street
# to a site's point, ``site_id`` set — or an imported OSM highway value), name (``name_key`` normalised for
# matching), one-way flag, length, house-number range where the data has one and the area codes of its middle;
# pieces meet at shared vertices. The demo city ships its streets; ``civicgrid import roads`` loads a city's own.
_V10: list[str] = [
    """
    CREATE TABLE IF NOT EXISTS roads (
        road_id BIGINT NOT NULL,
        kind VARCHAR,
        name VARCHAR,
        name_key VARCHAR,
        oneway BOOLEAN,
        site_id BIGINT,
        osm_id VARCHAR,
        number_from INTEGER,
        number_to INTEGER,
        length_m DOUBLE,
        district_code VARCHAR,
        street_code VARCHAR,
        community_code VARCHAR,
        dedup_key VARCHAR,
        import_id INTEGER,
        geom GEOMETRY
    )
    """,
]

# 11: ``road_numbers``, the numbered addresses of an imported extract (OSM ``addr:street`` +
# ``addr:housenumber``), and ``events.location_precision``: how exactly an address placed its event (``address``,
# a stored address; ``number``, ``intersection`` or ``road``).
_V11: list[str] = [
    """
    CREATE TABLE IF NOT EXISTS road_numbers (
        name VARCHAR NOT NULL,
        name_key VARCHAR NOT NULL,
        number VARCHAR NOT NULL,
        lng DOUBLE NOT NULL,
        lat DOUBLE NOT NULL,
        district_code VARCHAR,
        street_code VARCHAR,
        dedup_key VARCHAR,
        import_id INTEGER
    )
    """,
    "ALTER TABLE events ADD COLUMN location_precision VARCHAR",
]

#: Statements that bring a store from version ``v - 1`` to version ``v`` (``v`` > 6), run in one transaction when
#: a store is opened. A new store is created from :data:`LAKE_SCHEMA`, which ends with these.
LAKE_MIGRATIONS: dict[int, list[str]] = {7: _V7, 8: _V8, 9: _V9, 10: _V10, 11: _V11}

#: Statements creating a new store (schema version :data:`SCHEMA_VERSION`): the tables of versions 1 to 5 as
#: DuckLake tables (no constraints but NOT NULL), the macros, and the holiday calendar, then
#: :data:`LAKE_MIGRATIONS` in order.
LAKE_SCHEMA: list[str] = [_lake_statement(s) for s in [*_V1, *_V2, *_V3, *_V4]] + [
    s for v in sorted(LAKE_MIGRATIONS) for s in LAKE_MIGRATIONS[v]]
