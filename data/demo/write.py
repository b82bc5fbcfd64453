"""Writing the demo city into the store: areas, grids, sites, inspections, events, the import row and meta."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pyarrow as pa
import shapely
from civicgrid.data.demo.calendar import START
from civicgrid.data.demo.city import (
    CENTER_LAT,
    CENTER_LNG,
    CITY_NAME,
    CITY_NAME_EN,
    DISTRICTS,
    lnglat_to_xy,
    to_lnglat,
    xy_to_lnglat,
)
from civicgrid.data.demo.names import mobile_numbers, person_names, phone_numbers
from civicgrid.data.demo.simulate import COMPLAINT_PREFIXES
from civicgrid.data.demo.streets import build_streets
from civicgrid.geo.store import set_meta
from civicgrid.geo.times import now_local
from civicgrid.grids.locate import locate_points, location_arrays
from civicgrid.grids.road_places import road_key
from civicgrid.sites.cases import backfill

#: Short descriptions per problem type (the place name comes first).
PHRASES = {
    "0101": ["暴露垃圾", "垃圾乱扔无人清理", "门口垃圾暴露"],
    "0102": ["积存垃圾渣土", "建筑垃圾长期堆积", "渣土堆积未清运"],
    "0103": ["路面不洁", "道路油污未清扫", "路面泥泞不洁"],
    "0104": ["垃圾桶满溢", "垃圾桶满溢未及时清运", "垃圾箱外溢"],
    "0105": ["公厕卫生差", "公厕异味严重", "公厕无人保洁"], "0106": ["狗粪未清理", "动物粪便污染路面", "宠物粪便较多"],
    "0201": ["占道经营", "门口占道经营", "商户占道摆卖"], "0202": ["店外经营", "出店经营", "商户店外摆放"],
    "0203": ["流动摊贩", "流动摊点聚集", "游商占道"], "0204": ["乱堆物堆料", "杂物乱堆", "建材乱堆放"],
    "0205": ["沿街晾晒", "衣物沿街晾挂", "占道晾晒"], "0206": ["违规招牌广告", "招牌破损", "违规设置广告牌"],
    "0207": ["小广告", "乱贴小广告", "牛皮癣广告"], "0208": ["乱涂乱画", "墙面涂鸦", "乱涂写电话号码"],
    "0209": ["私搭乱建", "违章搭建", "私自搭建棚子"], "0301": ["机动车乱停放", "车辆占道停放", "违停严重"],
    "0302": ["共享单车乱停放", "非机动车乱停", "单车堆积"],
    "0303": ["占用消防通道", "消防通道被堵", "车辆堵塞消防通道"],
    "0304": ["行人闯红灯", "行人不走斑马线", "闯红灯现象多"],
    "0305": ["车辆不礼让行人", "斑马线不礼让", "机动车不礼让"],
    "0401": ["道路破损", "路面坑洼", "路面塌陷"], "0402": ["人行道破损", "人行道砖松动", "人行道塌陷"],
    "0403": ["井盖缺失", "井盖破损", "井盖松动异响"], "0404": ["公共设施破损", "护栏损坏", "座椅破损"],
    "0405": ["路灯不亮", "路灯损坏", "一排路灯不亮"], "0406": ["无障碍通道缺失", "盲道被占", "无障碍设施损坏"],
    "0407": ["架空线缆乱拉", "飞线充电", "线缆杂乱下垂"], "0408": ["建筑外立面破损", "外墙脱落", "外立面破旧"],
    "0501": ["公益广告缺失", "未设置公益广告", "公益宣传不足"],
    "0502": ["宣传品破旧", "公益广告褪色破损", "宣传栏污损"],
    "0601": ["工地扬尘", "施工扬尘严重", "工地未洒水降尘"], "0602": ["施工占道", "施工占用人行道", "施工围挡占道"],
    "0603": ["围挡破损", "围挡倒塌", "围挡破旧"], "0604": ["渣土遗撒", "渣土车撒漏", "夜间渣土遗撒"],
    "0701": ["不文明养犬", "遛狗不牵绳", "犬只扰民"], "0702": ["随地吐痰", "随地吐痰现象", "乱吐乱扔"],
    "0703": ["流浪乞讨", "乞讨人员滋扰", "流浪人员滞留"], "0801": ["有游商兜售", "放学时段游商聚集", "校门口流动摊贩"],
    "0802": ["网吧接纳未成年人", "未成年人进入网吧", "网吧未查验身份证"],
}
#: Events (and inspections) per insertion chunk.
CHUNK = 1_000_000


def clear_layers(con: duckdb.DuckDBPyConnection):
    """Empty the data layers (the demo replaces whatever the file held)."""
    for table in ("events", "inspections", "sites", "grids", "areas", "imports", "roads"):
        con.execute(f"DELETE FROM {table}")
    con.execute("DELETE FROM meta WHERE key LIKE 'demo_%' OR key LIKE 'city_%'")


def write_areas(con: duckdb.DuckDBPyConnection, rng, city):
    """Insert districts, streets, communities (dissolved from the grids, so they nest exactly) and grids."""
    polys, g_ll = city["polys"], city["grids_ll"]
    area_km2 = shapely.area(polys) / 1e6
    rows = []
    comm_geom = {}
    for c, code in city["c_code"].items():
        m = city["community"] == c
        geom = shapely.union_all(g_ll[m], grid_size=1e-7)
        comm_geom[c] = geom
        s = city["street"][m][0]
        zh, en = city["comm_names"][c]
        rows.append((code, f"{zh}社区", f"{en} Community", "community", city["s_code"][s], area_km2[m].sum(), geom))
    street_geom = {}
    for s, code in city["s_code"].items():
        cs = [c for c in city["c_code"] if city["street"][city["community"] == c][0] == s]
        geom = shapely.union_all([comm_geom[c] for c in cs], grid_size=1e-7)
        street_geom[s] = geom
        d = city["district"][city["street"] == s][0]
        zh, en = city["street_names"][s]
        rows.append((code, f"{zh}街道", f"{en} Subdistrict", "street", DISTRICTS[d][0],
                     area_km2[city["street"] == s].sum(), geom))
    for d in range(city["district"].max() + 1):
        ss = [s for s in city["s_code"] if city["district"][city["street"] == s][0] == d]
        geom = shapely.union_all([street_geom[s] for s in ss], grid_size=1e-7)
        rows.append((DISTRICTS[d][0], DISTRICTS[d][1], DISTRICTS[d][2], "district", None,
                     area_km2[city["district"] == d].sum(), geom))
    cols = list(zip(*rows, strict=True))
    table = pa.table({
        "code": cols[0], "name": cols[1], "name_en": cols[2], "level": cols[3],
        "parent_code": pa.array(cols[4], pa.string()), "area_km2": cols[5],
        "wkb": pa.array(shapely.to_wkb(np.asarray(cols[6], dtype=object)), pa.binary()),
    })
    con.register("_demo_areas", table)
    con.execute("INSERT INTO areas SELECT code, name, name_en, level, parent_code, area_km2, "
                "ST_GeomFromWKB(wkb) FROM _demo_areas")
    con.unregister("_demo_areas")
    n = len(polys)
    c_code = np.array([city["c_code"][c] for c in city["community"]], dtype=object)
    s_code = np.array([city["s_code"][s] for s in city["street"]], dtype=object)
    d_code = np.array([DISTRICTS[d][0] for d in city["district"]], dtype=object)
    grids = pa.table({
        "code": city["grid_code"].astype(str), "name": city["grid_name"].astype(str),
        "community_code": c_code.astype(str), "street_code": s_code.astype(str), "district_code": d_code.astype(str),
        "leader_name": person_names(rng, n), "leader_phone": mobile_numbers(rng, n),
        "households": city["households"].astype(np.int32), "area_km2": area_km2,
        "wkb": pa.array(shapely.to_wkb(g_ll), pa.binary()),
    })
    con.register("_demo_grids", grids)
    con.execute("INSERT INTO grids SELECT code, name, community_code, street_code, district_code, leader_name, "
                "leader_phone, households, area_km2, ST_GeomFromWKB(wkb) FROM _demo_grids")
    con.unregister("_demo_grids")


_UNIT_BY_CATEGORY = {
    "05": "示范市公共交通集团有限公司", "06": "示范市公共交通集团有限公司", "07": "示范市交通运输局",
    "08": "示范市交通运输局", "31": "示范市公安局交通警察支队", "11": "示范市园林绿化局", "12": "示范市文化旅游广电局",
}


def write_sites(con: duckdb.DuckDBPyConnection, rng, rows, city, import_id):
    """Insert the sample frame (metres in ``rows``) into ``sites``, located in the grids."""
    n = len(rows)
    cat = np.array([r["category_code"] for r in rows])
    geoms_m = np.array([r["geom"] for r in rows], dtype=object)
    geoms = to_lnglat(geoms_m)
    kind = shapely.get_type_id(geoms)
    rep = np.where(kind == 0, geoms, None)
    lines = kind == 1
    rep[lines] = shapely.line_interpolate_point(geoms[lines], 0.5, normalized=True)
    polys = kind == 3
    rep[polys] = shapely.point_on_surface(geoms[polys])
    ll = shapely.get_coordinates(rep)
    located = locate_points(con, ll[:, 0], ll[:, 1])
    address, unit = _addresses_and_units(con, rng, rows, city, ll, located)
    active = np.array([r.get("active", True) for r in rows])
    loc = location_arrays(located)
    table = pa.table({
        "site_id": np.arange(1, n + 1, dtype=np.int64),
        "external_id": [f"S{i:06d}" for i in range(1, n + 1)],
        "name": [r["name"] for r in rows], "address": address, "category_code": cat.astype(str),
        "responsible_unit": unit, "contact": person_names(rng, n), "phone": phone_numbers(rng, n), "active": active,
        "lng": ll[:, 0], "lat": ll[:, 1], **loc,
        "wkb": pa.array(shapely.to_wkb(geoms), pa.binary()),
    })
    con.register("_demo_sites", table)
    con.execute(
        f"""INSERT INTO sites (site_id, external_id, name, address, category_code, responsible_unit, contact, phone,
               active, lng, lat, h3, grid_code, community_code, street_code, district_code, dedup_key, import_id, geom)
            SELECT site_id, external_id, name, address, category_code, responsible_unit, contact, phone, active,
                   lng, lat, h3, grid_code, community_code, street_code, district_code, 'site:' || external_id,
                   {int(import_id)}, ST_GeomFromWKB(wkb) FROM _demo_sites""")
    con.unregister("_demo_sites")


def write_roads(con: duckdb.DuckDBPyConnection, city, rows, *, seed: int) -> int:
    """Generate the street network (:func:`civicgrid.data.demo.streets.build_streets`) on the stored sites and
    insert it into ``roads``; returns the number of pieces."""
    sites = con.execute("SELECT site_id, lng, lat FROM sites ORDER BY site_id").df()
    xy = lnglat_to_xy(sites["lng"].to_numpy(), sites["lat"].to_numpy())
    geoms = np.array([r["geom"] for r in rows], dtype=object)
    areas = list(geoms[shapely.get_type_id(geoms) == 3])
    pieces = build_streets(city, xy, sites["site_id"].to_numpy(), areas, seed=seed)
    geom_m = np.array([g for g, *_ in pieces], dtype=object)
    geom_ll = shapely.set_precision(to_lnglat(geom_m), 1e-7)
    table = pa.table({
        "road_id": np.arange(1, len(pieces) + 1, dtype=np.int64),
        "kind": [k for _, k, _, _ in pieces], "name": [n for _, _, n, _ in pieces],
        "name_key": [road_key(n) if n else None for _, _, n, _ in pieces],  # the streets also place addresses
        "oneway": np.zeros(len(pieces), dtype=bool),
        "site_id": pa.array([s for *_, s in pieces], pa.int64()),
        "length_m": shapely.length(geom_m),
        "wkb": pa.array(shapely.to_wkb(geom_ll), pa.binary()),
    })
    con.register("_demo_roads", table)
    con.execute("INSERT INTO roads (road_id, kind, name, name_key, oneway, site_id, length_m, geom) "
                "SELECT road_id, kind, name, name_key, oneway, site_id, length_m, ST_GeomFromWKB(wkb) FROM _demo_roads")
    con.unregister("_demo_roads")
    return len(pieces)


def _addresses_and_units(con: duckdb.DuckDBPyConnection, rng, rows, city, ll, located):
    """Address (district + street + nearest road + house number) and responsible unit of each site."""
    n = len(rows)
    xm = lnglat_to_xy(ll[:, 0], ll[:, 1])
    road_geoms = np.array([r["geom"] for r in city["roads"]], dtype=object)
    near = shapely.STRtree(road_geoms).query_nearest(shapely.points(xm), all_matches=False)[1]
    proj = shapely.line_locate_point(road_geoms[near], shapely.points(xm))
    num = 2 * (proj // 30).astype(int) + 1 + rng.integers(0, 2, n)
    area_name = dict(con.execute("SELECT code, name FROM areas").fetchall())
    unit, address = [], []
    for i, r in enumerate(rows):
        c = r["category_code"]
        dist = area_name.get(located["district_code"][i] or "", "")
        st = area_name.get(located["street_code"][i] or "", "")
        comm = area_name.get(located["community_code"][i] or "", "")
        road = city["roads"][near[i]]["name"]
        if c in ("28", "29", "30"):
            address.append(f"{dist}{st}{r['name'] if c != '29' else city['roads'][r['road']]['name']}")
        elif c == "06":
            address.append(f"{dist}{road}沿线")
        else:
            address.append(f"{dist}{st}{road}{num[i]}号")
        unit.append(_responsible_unit(r, dist, st, comm))
    return address, unit


def _responsible_unit(row, dist, st, comm):
    """The unit responsible for a site, from its category, name and the names of its areas."""
    c = row["category_code"]
    if c in _UNIT_BY_CATEGORY:
        return _UNIT_BY_CATEGORY[c]
    if c in ("09", "10", "28", "29", "30"):
        return f"{dist}城市管理和综合执法局"
    if c == "16":
        return f"{row['name']}管理有限公司"
    if c == "25":
        return f"{dist}教育局"
    if c in ("32", "33", "01", "37", "23") and st:
        return f"{st}办事处"
    if c in ("34", "35") and comm:
        return f"{comm}居民委员会"
    if c == "36":
        return f"{row['name']}物业服务中心"
    if c == "38":
        return f"{row['builder']}项目部"
    return row["name"]


def write_lookups(con: duckdb.DuckDBPyConnection, places, codes, inspectors):
    """Register the lookup tables the event and inspection inserts join: places, phrases, prefixes, inspectors."""
    con.register("_demo_places", pa.table({"id": np.arange(len(places), dtype=np.int32), "name": places}))
    ph = [(i, v, code, PHRASES.get(code, [code] * 3)[v % len(PHRASES.get(code, [code]))])
          for i, code in enumerate(codes) for v in range(3)]
    con.register("_demo_phrases", pa.table({"t": pa.array([p[0] for p in ph], pa.int16()),
                                            "v": pa.array([p[1] for p in ph], pa.int8()),
                                            "code": [p[2] for p in ph], "phrase": [p[3] for p in ph]}))
    con.register("_demo_prefixes", pa.table({"id": pa.array(range(len(COMPLAINT_PREFIXES)), pa.int8()),
                                             "p": COMPLAINT_PREFIXES}))
    con.register("_demo_inspectors", pa.table({"id": np.arange(len(inspectors)), "name": inspectors}))


def write_inspections(con: duckdb.DuckDBPyConnection, ins, import_id, bar):
    """Insert the inspections (in chunks), located at their sites."""
    n = len(ins["id"])
    for lo in range(0, n, CHUNK):
        hi = min(n, lo + CHUNK)
        con.register("_demo_ins", pa.table({
            "id": ins["id"][lo:hi], "t": _ts(ins["t"][lo:hi]), "site_id": ins["site"][lo:hi] + 1,
            "who": ins["who"][lo:hi], "found": ins["found"][lo:hi], "serial": ins["serial"][lo:hi],
        }))
        con.execute(f"""
            INSERT INTO inspections (inspection_id, external_id, site_id, time, inspector, conforming,
                                     problems_found, lng, lat, h3, grid_code, community_code, street_code,
                                     district_code, dedup_key, import_id)
            WITH c AS (
                SELECT *, 'INSP-' || strftime(t, '%Y%m%d') || '-' || lpad(CAST(serial AS VARCHAR), 5, '0') AS ext
                FROM _demo_ins)
            SELECT c.id, c.ext, c.site_id, c.t, i.name, c.found = 0, c.found, s.lng, s.lat, s.h3, s.grid_code,
                   s.community_code, s.street_code, s.district_code, 'inspection:' || c.ext, {int(import_id)}
            FROM c JOIN sites s ON s.site_id = c.site_id JOIN _demo_inspectors i ON i.id = c.who
        """)
        con.unregister("_demo_ins")
    bar.update(1)


def write_events(con: duckdb.DuckDBPyConnection, ev, import_id, bar):
    """Insert the events (in chunks of :data:`CHUNK`), located in the grids, with their texts."""
    n = len(ev["t"])
    for lo in range(0, n, CHUNK):
        hi = min(n, lo + CHUNK)
        sl = slice(lo, hi)
        lng, lat = xy_to_lnglat(ev["xy"][sl, 0], ev["xy"][sl, 1])
        loc = location_arrays(locate_points(con, lng, lat))
        site, insp, reb = ev["site"][sl], ev["insp"][sl], ev["rebound_of"][sl]
        table = pa.table({
            "event_id": np.arange(lo + 1, hi + 1, dtype=np.int64), "src": ev["src"][sl], "typ": ev["typ"][sl],
            "t": _ts(ev["t"][sl]),
            "open": ev["open"][sl],
            "site_id": pa.array(site + 1, pa.int64(), mask=site < 0),
            "inspection_id": pa.array(insp, pa.int64(), mask=insp < 0),
            "place": ev["place"][sl], "variant": ev["variant"][sl], "prefix": ev["prefix"][sl],
            "lng": lng, "lat": lat, **loc,
            "deadline": _ts(ev["deadline"][sl]),
            "rectified_at": _ts(ev["rectified"][sl], ev["rect_null"][sl]),
            "closed_at": _ts(ev["closed"][sl], ev["closed_null"][sl]),
            "reopened": ev["reopened"][sl], "rebound_of": pa.array(reb, pa.int64(), mask=reb < 0),
            "serial": ev["serial"][sl],
        })
        con.register("_demo_ev", table)
        con.execute(f"""
            INSERT INTO events (event_id, source, external_id, problem_type, time, status, site_id, inspection_id,
                                text, lng, lat, h3, grid_code, community_code, street_code, district_code,
                                deadline, rectified_at, closed_at, reopened, dedup_key, import_id, rebound_of)
            WITH c AS (
                SELECT *, CASE WHEN src = 0 THEN 'complaint' ELSE 'inspection' END AS source,
                       CASE WHEN src = 0 THEN '12345-' ELSE 'HIT-' END || strftime(t, '%Y%m%d') || '-'
                           || lpad(CAST(serial AS VARCHAR), 6, '0') AS ext
                FROM _demo_ev)
            SELECT c.event_id, c.source, c.ext, ph.code, c.t, CASE WHEN c.open THEN 'open' ELSE 'closed' END,
                   c.site_id, c.inspection_id,
                   replace(replace(CASE WHEN c.src = 0 THEN pre.p ELSE '' END || pl.name || ph.phrase,
                                   '公厕公厕', '公厕'), '工地工地', '工地'),
                   c.lng, c.lat, c.h3, c.grid_code, c.community_code, c.street_code, c.district_code,
                   c.deadline, c.rectified_at, c.closed_at, c.reopened, c.source || ':' || c.ext, {int(import_id)},
                   c.rebound_of
            FROM c JOIN _demo_phrases ph ON ph.t = c.typ AND ph.v = c.variant
                   JOIN _demo_places pl ON pl.id = c.place
                   JOIN _demo_prefixes pre ON pre.id = c.prefix
        """)
        con.unregister("_demo_ev")
        bar.update(1)


def _ts(seconds, null=None):
    """Seconds since START as an Arrow timestamp array (``null``: mask of missing values)."""
    arr = START + np.asarray(seconds, dtype=np.int64).astype("timedelta64[s]")
    return pa.array(arr, pa.timestamp("s"), mask=null)


def record_demo(con: duckdb.DuckDBPyConnection, *, import_id, seed, events, started, counts):
    """Record the demo: its import row, its meta keys (city name and centre, seed, size), and the cases.

    The cases and their audit trail are built from the events by :func:`civicgrid.sites.cases.backfill`.

    Parameters
    ----------
    con : duckdb.DuckDBPyConnection
        The write connection.
    import_id : int
        The import the demo's rows belong to.
    seed, events : int
        The seed and the number of events the demo was built with.
    started : datetime.datetime
        When the build started.
    counts : dict
        Numbers of complaints, hits and rebounds from the simulation.

    Returns
    -------
    dict
        Counts of what was written (areas per level, grids, sites, inspections, events, ...).
    """
    summary = {
        "districts": _count(con, "areas WHERE level = 'district'"),
        "streets": _count(con, "areas WHERE level = 'street'"),
        "communities": _count(con, "areas WHERE level = 'community'"),
        "grids": _count(con, "grids"), "sites": _count(con, "sites"),
        "inspections": _count(con, "inspections"), "events": _count(con, "events"),
        "complaints": int(counts["complaints"]), "hits": int(counts["hits"]),
        "rebounds": int(counts["rebounds"]),
        "outside_grids": _count(con, "events WHERE grid_code IS NULL"),
        "roads": _count(con, "roads"),
    }
    total = sum(summary[k] for k in ("districts", "streets", "communities", "grids", "sites",
                                     "inspections", "events"))
    report = {"layer": "demo", "seed": int(seed), "events": events, **summary}
    con.execute("INSERT INTO imports VALUES (?, 'demo', ?, ?, ?, ?, ?, 0, 0, ?, ?)",
                [import_id, f"demo:seed={int(seed)},events={events}", started, now_local(), total, total,
                 summary["outside_grids"], json.dumps(report, ensure_ascii=False)])
    for key, value in (("city_name", CITY_NAME), ("city_name_en", CITY_NAME_EN),
                       ("city_center", f"{CENTER_LNG},{CENTER_LAT}"), ("demo_seed", str(int(seed))),
                       ("demo_events", str(events))):
        set_meta(con, key, value)
    backfill(con, actor="demo")  # cases + audit trail from the events
    return summary


def _count(con: duckdb.DuckDBPyConnection, what: str) -> int:
    return int(con.execute(f"SELECT count(*) FROM {what}").fetchone()[0])
