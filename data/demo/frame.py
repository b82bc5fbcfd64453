"""The demo city's sample frame (样本框): sites of all 38 categories, as points, lines and areas (metres)."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import shapely
from civicgrid.data.demo.city import density, points_in
from civicgrid.data.demo.names import unique_names
from shapely import ops

#: Sample-frame size per category for categories with a fixed count (others follow the hierarchy).
SITE_COUNTS = {
    "02": 5, "03": 80, "04": 30, "05": 250, "06": 20, "07": 25, "08": 4, "09": 100, "10": 10, "11": 14,
    "12": 5, "13": 60, "14": 300, "15": 40, "16": 20, "17": 15, "18": 10, "19": 10, "20": 15, "21": 4,
    "22": 5, "24": 60, "26": 50, "27": 30, "28": 30, "29": 8, "30": 80, "31": 40, "36": 150, "37": 6,
    "38": 36,
}


_BANKS = ["中国工商银行", "中国农业银行", "中国银行", "中国建设银行", "交通银行", "招商银行", "中国邮政储蓄银行",
          "兴业银行", "浦发银行", "示范农商银行", "华融湘江银行", "中信银行"]
_COUNTERS = ["中国移动营业厅", "中国电信营业厅", "中国联通营业厅", "国网供电营业厅", "自来水公司营业厅",
             "税务局办税服务厅", "燃气公司营业厅", "社保服务大厅"]
_HOTELS = ["如家酒店", "汉庭酒店", "锦江之星", "7天连锁酒店", "维也纳酒店", "全季酒店", "华天大酒店", "亚朵酒店",
           "城市便捷酒店"]
_EATERIES = ["老长沙", "湘味", "刘记", "张记", "李家", "徐记", "周记", "王记", "杨裕兴", "费大厨", "陈记", "胡师傅"]
_DISHES = ["米粉店", "臭豆腐", "湘菜馆", "面馆", "烧烤", "小炒", "粥铺", "饺子馆", "火锅店", "蒸菜馆", "口味虾",
           "茶餐厅"]
_MALLS = ["步步高超市", "沃尔玛", "永辉超市", "家乐福", "华润万家", "王府井百货", "平和堂", "万达广场", "友阿商场",
          "盒马鲜生"]
_CINEMAS = ["万达影城", "CGV影城", "横店电影城", "金逸影城", "大地影院", "星美国际影城", "示范大剧院", "湘剧院"]
_BOOKSHOPS = ["新华书店", "弘道书店", "述古书店", "西西弗书店", "止间书店", "袁家岭书城"]
_TUTORS = ["新东方", "学而思", "卓越教育", "思维乐园", "小天才艺术培训", "博雅书法培训", "金话筒口才", "乐博机器人"]
_NETBARS = ["网鱼网咖", "极速网吧", "星空网咖", "e时代网吧", "零度网咖", "火线网吧"]
_PARKS = ["烈士公园", "月湖公园", "南郊公园", "桃花岭公园", "晓园公园", "洋湖湿地公园", "梅溪湖公园", "桂花公园",
          "后湖公园", "西湖公园", "松雅湖公园", "植物园", "湘江风光带", "体育公园", "砂子塘公园"]
_SQUARES = ["五一广场", "人民广场", "市民广场", "芙蓉广场", "湘江广场", "解放广场", "文化广场", "体育广场", "世纪广场",
            "火车站广场", "东塘广场"]
_SCENIC = ["天心阁景区", "古城墙遗址公园", "白鹭洲景区", "太平老街历史街区", "湘江夜游码头", "开福寺"]
_STATIONS = ["示范火车站", "示范汽车南站", "示范汽车西站", "湘江客运码头"]
_HOSPITALS = ["示范市第一人民医院", "示范市中心医院", "示范市中医医院", "示范市妇幼保健院", "示范市第三医院",
              "示范市儿童医院", "示范市口腔医院", "示范市精神卫生中心"]
_CULTURE = ["示范市图书馆", "示范市博物馆", "示范市文化馆", "示范市科技馆", "示范市美术馆", "示范市规划展示馆"]
_PATRIOTIC = ["示范市革命烈士纪念馆", "示范市革命纪念馆", "新民学会旧址", "抗战胜利纪念馆"]
_COMPOUND_A = ["碧桂园", "万科", "保利", "中建", "华润", "金地", "融创", "绿地", "中海", "湘江", "芙蓉", "桂花",
               "东方", "阳光", "锦绣", "金色", "翠苑", "紫东", "天健", "华远", "恒达", "新城", "润和", "长房"]
_COMPOUND_B = ["小区", "花园", "新村", "家园", "公寓", "华府", "名城", "雅苑", "城", "佳园", "府"]
_DORMS = ["铁路局宿舍", "电力局宿舍", "纺织厂宿舍", "机械厂宿舍", "师范大学家属区", "邮电局宿舍", "卷烟厂宿舍"]
#: Villages of the urban fringe (城乡接合部) and just outside the city.
VILLAGES = ["马坡岭", "新塘", "黄花", "杨家湾", "牛角冲", "桐木", "大塘冲", "石门", "白泥湖", "花桥"]
_BUILDERS = ["中建五局", "中铁建工", "湖南建工", "中交一公局", "远大住工", "省六建", "中建三局", "城建集团"]
_PROJECTS = ["安置房项目", "商业综合体项目", "学校新建项目", "医院扩建项目", "地铁站项目", "道路提质改造项目",
             "棚户区改造项目", "住宅项目", "产业园项目"]


def _stem(road):
    return road[:-2] if road.endswith("大道") else road[:-1] if road[-1] in "路街巷里" else road


def _rect(cx, cy, w, h, ang):
    c, s = np.cos(ang), np.sin(ang)
    pts = np.array([[-w, -h], [w, -h], [w, h], [-w, h]]) / 2
    return shapely.Polygon(np.column_stack([cx + pts[:, 0] * c - pts[:, 1] * s, cy + pts[:, 0] * s + pts[:, 1] * c]))


def _blob(cx, cy, r, rng):
    theta = np.sort(rng.uniform(0, 2 * np.pi, 11))
    rad = r * rng.uniform(0.65, 1.15, 11)
    return shapely.Polygon(np.column_stack([cx + rad * np.cos(theta), cy + rad * np.sin(theta)])).convex_hull


class _Frame:
    """Collects sample-frame sites while they are generated (geometry in local metres)."""

    def __init__(self, rng, boundary, roads, areas):
        self.rng = rng
        self.boundary = boundary
        self.inner = boundary.buffer(-220)
        shapely.prepare(self.inner)
        self.roads = roads
        self.names = [r["name"] for r in roads]
        self.areas = areas  # {"district": [(name, poly)], "street": ..., "community": ...}
        self.rows: list[dict] = []
        self.placed: list = []  # area sites that others may not overlap
        kinds = np.array([r["kind"] for r in roads])
        self.road_geoms = np.array([r["geom"] for r in roads], dtype=object)
        self.major = np.flatnonzero(kinds != "alley")
        self.alleys = np.flatnonzero(kinds == "alley")
        big = shapely.union_all(self.road_geoms[self.major]).buffer(14)
        art = shapely.union_all(self.road_geoms[kinds == "arterial"]).buffer(18)
        shapely.prepare(big)
        shapely.prepare(art)
        self.avoid_major, self.avoid_arterial = big, art
        self._tree = None

    def nearest_road(self, xy):
        """Index of the road nearest a point (metres)."""
        if self._tree is None:
            self._tree = shapely.STRtree(self.road_geoms)
        return int(self._tree.query_nearest(shapely.Point(*xy))[0])

    def add(self, cat, name, geom, **extra):
        """Add a site of category ``cat``."""
        self.rows.append({"category_code": cat, "name": name, "geom": geom, **extra})

    def at_road(self, cat, n, make_name, **kw):
        """Add ``n`` point sites beside roads, named by ``make_name(road name)``; ``kw`` as :meth:`roadside`."""
        xy, r = self.roadside(n, **kw)
        for (x, y), k in zip(xy, r, strict=True):
            self.add(cat, make_name(self.names[k]), shapely.Point(x, y))

    def roadside(self, n, pool=None, *, setback=(12, 30), power=1.5):
        """Points beside roads, denser where more people live; returns (xy, road index)."""
        rng = self.rng
        pool = self.major if pool is None else pool
        lengths = shapely.length(self.road_geoms[pool])
        m = 6 * n + 50
        r = pool[rng.choice(len(pool), m, p=lengths / lengths.sum())]
        pos = rng.random(m) * shapely.length(self.road_geoms[r])
        p = shapely.get_coordinates(shapely.line_interpolate_point(self.road_geoms[r], pos))
        q = shapely.get_coordinates(shapely.line_interpolate_point(self.road_geoms[r], pos + 1.0))
        t = q - p
        t /= np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-9)
        side = rng.choice([-1.0, 1.0], m)
        off = rng.uniform(*setback, m) * side
        xy = p + np.column_stack([-t[:, 1], t[:, 0]]) * off[:, None]
        ok = shapely.contains_xy(self.inner, xy[:, 0], xy[:, 1])
        w = density(xy[:, 0], xy[:, 1]) ** power * ok
        pick = rng.choice(m, min(n, int(ok.sum())), replace=False, p=w / w.sum())
        return xy[pick], r[pick]

    def place_area(self, n, make, *, avoid="major", within=None, power=1.0, tries=60):
        """Polygons from ``make(x, y)`` at density-weighted places, not overlapping roads or other areas."""
        rng = self.rng
        region = self.inner if within is None else within
        out = []
        for _ in range(n):
            for _t in range(tries):
                x, y = points_in(region, 1, rng, weighted=power > 0)[0]
                g = make(x, y)
                if not self.inner.contains(g):
                    continue
                if avoid == "major" and self.avoid_major.intersects(g):
                    continue
                if avoid == "arterial" and self.avoid_arterial.intersects(g):
                    continue
                if self.placed and shapely.intersects(g, np.asarray(self.placed, dtype=object)).any():
                    continue
                break
            else:
                continue
            self.placed.append(g.buffer(15))
            out.append(g)
        return out


def build_frame(rng, boundary, roads, areas):
    """Generate the sample frame over all 38 categories.

    Parameters
    ----------
    rng : numpy.random.Generator
        The demo's random generator (advanced by the call).
    boundary : shapely.Polygon
        The city boundary (metres).
    roads : list of dict
        The roads of :func:`civicgrid.data.demo.city.build_city` (name, kind, geom, axis, index).
    areas : dict
        ``{"district": [(name, polygon)], "street": [...], "community": [...]}`` in metres.

    Returns
    -------
    list of dict
        One dict per site: ``category_code``, unique ``name``, ``geom`` (metres) and, for some categories,
        ``road`` (index into ``roads``), ``gates`` (school gates) or ``builder``.
    """
    f = _Frame(rng, boundary, roads, areas)
    # Areas first (they claim space), big ones first.
    _open_spaces(f)
    _schools(f)
    _markets_compounds_building_sites(f)
    _urban_fringe(f)
    _lines(f)
    _offices(f)
    _roadside_sites(f)
    rows = f.rows
    for r, nm in zip(rows, unique_names([r["name"] for r in rows]), strict=True):
        r["name"] = nm
    return rows


def _open_spaces(f):
    """Parks, scenic spots and squares."""
    rng = f.rng
    for g, nm in zip(f.place_area(SITE_COUNTS["11"], lambda x, y: _blob(x, y, rng.uniform(180, 480), rng),
                                  avoid="arterial", power=0.3), _PARKS, strict=False):
        f.add("11", nm, g)
    for g, nm in zip(f.place_area(SITE_COUNTS["12"], lambda x, y: _blob(x, y, rng.uniform(120, 260), rng),
                                  avoid="arterial"), _SCENIC, strict=False):
        f.add("12", nm, g)
    for g, nm in zip(f.place_area(SITE_COUNTS["10"], lambda x, y: _rect(x, y, rng.uniform(90, 200),
                                                                        rng.uniform(80, 160), rng.normal(0, 0.1)),
                                  power=2), _SQUARES, strict=False):
        f.add("10", nm, g)


def _schools(f):
    """Schools and their 200 m surroundings."""
    rng, names, areas = f.rng, f.names, f.areas
    schools = f.place_area(SITE_COUNTS["24"], lambda x, y: _rect(x, y, rng.uniform(70, 190), rng.uniform(60, 150),
                                                                 rng.normal(0, 0.12)))
    kinds = rng.choice(["小学", "中学", "幼儿园"], len(schools), p=[0.4, 0.25, 0.35])
    comm_names = [nm for nm, _ in areas["community"]]
    middle = iter(range(1, 99))
    for g, kind in zip(schools, kinds, strict=True):
        c = shapely.get_coordinates(g.centroid)[0]
        if kind == "中学":
            nm = f"示范市第{next(middle)}中学"
        elif kind == "小学":
            nm = f"{_stem(names[f.nearest_road(c)])}小学"
        else:
            nm = f"{rng.choice(comm_names)}幼儿园"
        f.add("24", nm, g)
    school_rows = [r for r in f.rows if r["category_code"] == "24"]
    school_rows_names = unique_names([r["name"] for r in school_rows])
    for r, nm in zip(school_rows, school_rows_names, strict=True):
        r["name"] = nm
    for r in school_rows:
        ring = r["geom"].buffer(200).difference(r["geom"])
        # School gates: where hawkers wait at dismissal time.
        gates = shapely.get_coordinates(shapely.line_interpolate_point(
            r["geom"].exterior, rng.random(2), normalized=True))
        f.add("25", f"{r['name']}周边", ring, gates=gates)


def _markets_compounds_building_sites(f):
    """Farmers' markets, residential compounds and construction sites."""
    rng, names = f.rng, f.names
    for g in f.place_area(SITE_COUNTS["16"], lambda x, y: _rect(x, y, rng.uniform(60, 140), rng.uniform(50, 110),
                                                                rng.normal(0, 0.15)), power=1.5):
        c = shapely.get_coordinates(g.centroid)[0]
        f.add("16", f"{_stem(names[f.nearest_road(c)])}"
                    f"{rng.choice(['农贸市场', '农贸市场', '农贸市场', '集贸市场'])}", g)
    comp_names = [f"{a}{b}" for a in _COMPOUND_A for b in _COMPOUND_B]
    comp_names = list(rng.permutation(comp_names))
    for g in f.place_area(SITE_COUNTS["36"], lambda x, y: _rect(x, y, rng.uniform(120, 360), rng.uniform(110, 300),
                                                                rng.normal(0, 0.1))):
        nm = comp_names.pop() if rng.random() > 0.08 else str(rng.choice(_DORMS))
        f.add("36", nm, g)
    for g in f.place_area(SITE_COUNTS["38"], lambda x, y: _rect(x, y, rng.uniform(100, 260), rng.uniform(90, 220),
                                                                rng.normal(0, 0.2)), power=0.2):
        c = shapely.get_coordinates(g.centroid)[0]
        builder = rng.choice(_BUILDERS)
        f.add("38", f"{builder}{_stem(names[f.nearest_road(c)])}{rng.choice(_PROJECTS)}工地", g, builder=builder)


def _urban_fringe(f):
    """Urban-rural fringe: wedges of the outer band."""
    rng, boundary = f.rng, f.boundary
    band = boundary.difference(boundary.buffer(-700))
    starts = np.sort(rng.choice(np.arange(0, 360, 40), SITE_COUNTS["37"], replace=False)) + rng.uniform(0, 8)
    for a0, vil in zip(starts, rng.permutation(VILLAGES), strict=False):
        a1 = np.radians(a0 + rng.uniform(14, 26))
        a0 = np.radians(a0)
        wedge = shapely.Polygon([(0, 0), (9000 * np.cos(a0), 9000 * np.sin(a0)),
                                 (9000 * np.cos((a0 + a1) / 2), 9000 * np.sin((a0 + a1) / 2)),
                                 (9000 * np.cos(a1), 9000 * np.sin(a1))])
        g = band.intersection(wedge)
        if g.geom_type == "MultiPolygon":
            g = max(g.geoms, key=lambda p: p.area)
        f.add("37", f"{vil}城乡接合部", g)


def _lines(f):
    """Lines: main roads, commercial streets, alleys, bus lines."""
    rng, roads, names = f.rng, f.roads, f.names
    major = sorted(f.major, key=lambda i: (roads[i]["kind"] != "arterial", -roads[i]["geom"].length))
    for i in major[: SITE_COUNTS["28"]]:
        f.add("28", names[i], roads[i]["geom"], road=i)
    sec = [i for i in f.major if roads[i]["kind"] == "secondary"]
    sec = sorted(sec, key=lambda i: -density(*shapely.get_coordinates(roads[i]["geom"].centroid)[0]))
    for i in sec[: SITE_COUNTS["29"]]:
        g = roads[i]["geom"]
        proj = g.project(shapely.Point(0, 0).buffer(1).centroid)  # nearest the centre
        seg = ops.substring(g, max(0, proj - rng.uniform(250, 450)), min(g.length, proj + rng.uniform(250, 450)))
        suffix = rng.choice(["商业街", "步行街", "美食街"])
        f.add("29", f"{_stem(names[i])}{suffix}", seg, road=i)
    al = np.array(f.alleys)
    w = np.array([density(*shapely.get_coordinates(roads[i]["geom"].centroid)[0]) for i in al]) ** 2
    for i in np.sort(rng.choice(al, min(SITE_COUNTS["30"], len(al)), replace=False, p=w / w.sum())):
        f.add("30", names[i], roads[i]["geom"], road=i)
    for nm, g in zip(unique_names([f"{k}路公交车" for k in np.sort(rng.choice(np.arange(1, 160), SITE_COUNTS["06"],
                                                                          replace=False))]),
                     _bus_lines(rng, roads, SITE_COUNTS["06"]), strict=False):
        f.add("06", nm, g)


#: Names of the offices tied to the hierarchy, by (level, category).
_OFFICE_NAMES = {
    ("district", "01"): "{}新时代文明实践中心", ("district", "02"): "{}政务服务中心",
    ("district", "22"): "{}青少年活动中心", ("street", "01"): "{}街道新时代文明实践所",
    ("street", "32"): "{}街道办事处", ("street", "33"): "{}街道综合文化站",
    ("street", "23"): "{}街道未成年人心理健康辅导站", ("community", "34"): "{}社区居委会",
    ("community", "35"): "{}社区综合文化服务中心",
}


def _offices(f):
    """Points tied to the hierarchy: offices and centres of each district, street and community."""
    rng, areas, pt = f.rng, f.areas, shapely.Point
    for level, cats in (("district", ["01", "02", "22"]), ("street", ["01", "32", "33", "23"]),
                        ("community", ["34", "35"])):
        for nm, poly in areas[level]:
            c = points_in(poly.buffer(-60) if poly.buffer(-60).area > 0 else poly, 1, rng, weighted=True)[0]
            for k, cat in enumerate(cats):
                xy = c if k == 0 else c + rng.normal(0, 30, 2)
                f.add(cat, _OFFICE_NAMES[(level, cat)].format(nm), pt(*xy))
    n_extra_halls = SITE_COUNTS["02"] - len(areas["district"])
    for k, ((x, y), _r) in enumerate(zip(*f.roadside(max(n_extra_halls, 0), power=3), strict=True)):
        f.add("02", "示范市政务服务中心" if k == 0 else f"示范市政务服务中心{k + 1}号分厅", pt(x, y))
    n_youth = SITE_COUNTS["22"] - len(areas["district"])
    for (x, y), _r in zip(*f.roadside(max(n_youth, 0), power=3), strict=True):
        f.add("22", "示范市青少年宫", pt(x, y))


def _roadside_sites(f):
    """Points beside roads: banks, counters, stops, shops, hospitals, ...; and major junctions."""
    rng, roads, pt = f.rng, f.roads, shapely.Point
    f.at_road("03", SITE_COUNTS["03"], lambda r: f"{rng.choice(_BANKS)}{_stem(r)}支行", power=2)
    f.at_road("04", SITE_COUNTS["04"], lambda r: f"{rng.choice(_COUNTERS)}（{r}）", power=1.5)
    f.at_road("05", SITE_COUNTS["05"], lambda r: f"{r}{rng.choice(['口', '东', '西', '南', '北', '中'])}站",
              setback=(6, 10), power=0.7)
    f.at_road("07", SITE_COUNTS["07"], lambda r: f"{r}出租车候客点", setback=(6, 10), power=2)
    for (x, y), _r, nm in zip(*f.roadside(SITE_COUNTS["08"], power=0.5, setback=(60, 120)), _STATIONS,
                              strict=False):
        f.add("08", nm, pt(x, y))
    f.at_road("09", SITE_COUNTS["09"], lambda r: f"{r}公厕", pool=np.arange(len(roads)), power=1.0)
    f.at_road("13", SITE_COUNTS["13"], lambda r: f"{rng.choice(_HOTELS)}（{r}店）", power=2)
    f.at_road("14", SITE_COUNTS["14"], lambda r: f"{rng.choice(_EATERIES)}{rng.choice(_DISHES)}（{r}店）", power=2)
    f.at_road("15", SITE_COUNTS["15"], lambda r: f"{rng.choice(_MALLS)}（{r}店）", power=2)
    hosp = iter(_HOSPITALS)
    dnames = [nm for nm, _ in f.areas["district"]]
    f.at_road("17", SITE_COUNTS["17"],
              lambda r: next(hosp, None) or (f"{rng.choice(dnames)}"
                                             f"{rng.choice(['人民医院', '中医院', '社区卫生服务中心', '妇幼保健所'])}"),
              setback=(40, 80), power=2)
    cult = iter(_CULTURE)
    f.at_road("18", SITE_COUNTS["18"],
              lambda r: next(cult, None) or f"{rng.choice(dnames)}{rng.choice(['图书馆', '文化馆'])}",
              setback=(40, 80), power=2)
    f.at_road("19", SITE_COUNTS["19"], lambda r: f"{rng.choice(_CINEMAS)}（{r}店）", power=2)
    f.at_road("20", SITE_COUNTS["20"], lambda r: f"{rng.choice(_BOOKSHOPS)}（{r}店）", power=2)
    pat = iter(_PATRIOTIC)
    f.at_road("21", SITE_COUNTS["21"], lambda r: next(pat, None) or f"{_stem(r)}纪念馆", setback=(40, 80))
    f.at_road("26", SITE_COUNTS["26"], lambda r: f"{rng.choice(_TUTORS)}（{r}校区）", power=2)
    f.at_road("27", SITE_COUNTS["27"], lambda r: f"{rng.choice(_NETBARS)}（{r}店）", power=1.5)
    for nm, p in _intersections(rng, roads, SITE_COUNTS["31"]):
        f.add("31", nm, p)




def _bus_lines(rng, roads, n):
    """Bus routes: walks on the arterial lattice following the roads between junctions."""
    ns = {r["index"]: r["geom"] for r in roads if r["kind"] == "arterial" and r["axis"] == "ns"}
    ew = {r["index"]: r["geom"] for r in roads if r["kind"] == "arterial" and r["axis"] == "ew"}
    node = {}
    for i, a in ns.items():
        for j, b in ew.items():
            p = a.intersection(b)
            if p.geom_type == "MultiPoint":
                p = p.geoms[0]
            if p.geom_type == "Point":
                node[(i, j)] = p
    keys = sorted(node)
    out = []
    for _ in range(n * 20):
        if len(out) >= n:
            break
        cur = keys[rng.integers(len(keys))]
        path = [cur]
        heading = None
        for _s in range(rng.integers(4, 10)):
            moves = [(1, 0), (-1, 0), (0, 1), (0, -1)]
            if heading is not None and rng.random() < 0.6:
                moves = [heading, *moves]
            for mv in moves:
                nxt = (cur[0] + mv[0], cur[1] + mv[1])
                if nxt in node and nxt not in path:
                    path.append(nxt)
                    cur, heading = nxt, mv
                    break
            else:
                break
        if len(path) < 4:
            continue
        coords = []
        for a, b in pairwise(path):
            road = ns[a[0]] if a[0] == b[0] else ew[a[1]]
            pa_, pb = road.project(node[a]), road.project(node[b])
            seg = ops.substring(road, pa_, pb)
            c = shapely.get_coordinates(seg)
            coords.extend(c if not coords else c[1:])
        line = shapely.LineString(coords)
        if line.length > 1500:
            out.append(line)
    return out


def _intersections(rng, roads, n):
    """Major junctions: arterial crossings first, then arterial-secondary crossings."""
    idx = [i for i, r in enumerate(roads) if r["kind"] != "alley"]
    found = []
    for a_pos, a in enumerate(idx):
        for b in idx[a_pos + 1:]:
            ra, rb = roads[a], roads[b]
            if ra["kind"] == "secondary" and rb["kind"] == "secondary":
                continue
            p = ra["geom"].intersection(rb["geom"])
            pts = [p] if p.geom_type == "Point" else list(getattr(p, "geoms", []))
            for q in pts:
                if q.geom_type == "Point":
                    rank = (ra["kind"] == "secondary") + (rb["kind"] == "secondary")
                    found.append((rank, -float(density(q.x, q.y)), f"{ra['name']}与{rb['name']}交叉口", q))
    found.sort(key=lambda t: (t[0], t[1]))
    out = found[:n]
    return [(nm, q) for _, _, nm, q in out]
