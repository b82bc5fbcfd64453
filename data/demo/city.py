"""The demo city's ground: boundary, roads, micro-grids and the district → street → community hierarchy.

Everything is generated in local metres (x east, y north of the centre); :func:`to_lnglat` and
:func:`xy_to_lnglat` turn metres into WGS84 longitude and latitude.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import shapely

#: City name (Chinese, English) and centre (WGS84 lon, lat): near 28.23N 112.94E, Hunan.
CITY_NAME = "示范市"
CITY_NAME_EN = "Demo City"
CENTER_LNG, CENTER_LAT = 112.94, 28.23
#: Half-axes (m) of the built-up area: about 12 km east–west by 10 km north–south.
HALF_AXES_M = (6000.0, 5000.0)
#: Number of micro-grids generated (the tessellation is clipped to the city boundary).
N_GRIDS = 460
#: Micro-grids per community, on average.
GRIDS_PER_COMMUNITY = 9
#: Streets (街道) per district.
STREETS_PER_DISTRICT = (3, 3, 3, 4)

#: Districts: (county code, name, English name).
DISTRICTS = [
    ("430102", "芙蓉区", "Furong District"),
    ("430103", "天心区", "Tianxin District"),
    ("430104", "麓山区", "Lushan District"),
    ("430105", "开元区", "Kaiyuan District"),
]
#: Sub-district (街道) names and English names.
STREET_NAMES = [
    ("东风", "Dongfeng"), ("五里牌", "Wulipai"), ("朝阳", "Chaoyang"), ("文艺路", "Wenyilu"),
    ("定王台", "Dingwangtai"), ("火星", "Huoxing"), ("马王堆", "Mawangdui"), ("湘湖", "Xianghu"),
    ("望月湖", "Wangyuehu"), ("银盆岭", "Yinpenling"), ("坡子街", "Pozijie"), ("城南路", "Chengnanlu"),
    ("金盆岭", "Jinpenling"), ("清水塘", "Qingshuitang"), ("洪山", "Hongshan"), ("月湖", "Yuehu"),
]
#: Community (社区) names and English names.
COMMUNITY_NAMES = [
    ("东风", "Dongfeng"), ("桂花", "Guihua"), ("荷花", "Hehua"), ("建新", "Jianxin"), ("光明", "Guangming"),
    ("和平", "Heping"), ("幸福", "Xingfu"), ("南湖", "Nanhu"), ("新华", "Xinhua"), ("育英", "Yuying"),
    ("园艺", "Yuanyi"), ("文化", "Wenhua"), ("万家丽", "Wanjiali"), ("龙王港", "Longwanggang"),
    ("杨家山", "Yangjiashan"), ("青园", "Qingyuan"), ("晚报", "Wanbao"), ("燕山", "Yanshan"),
    ("韶山", "Shaoshan"), ("长岭", "Changling"), ("白沙", "Baisha"), ("天鹅", "Tian'e"), ("大塘", "Datang"),
    ("新民", "Xinmin"), ("东茅", "Dongmao"), ("西湖", "Xihu"), ("北站", "Beizhan"), ("湘春", "Xiangchun"),
    ("丝茅冲", "Simaochong"), ("先锋", "Xianfeng"), ("学宫", "Xuegong"), ("古道巷", "Gudaoxiang"),
    ("城北", "Chengbei"), ("荷叶", "Heye"), ("盛世", "Shengshi"), ("紫薇", "Ziwei"), ("枫林", "Fenglin"),
    ("银杏", "Yinxing"), ("梅溪", "Meixi"), ("桃源", "Taoyuan"), ("金桥", "Jinqiao"), ("红星", "Hongxing"),
    ("劳动", "Laodong"), ("曙光", "Shuguang"), ("阳光", "Yangguang"), ("雨花", "Yuhua"), ("松桂", "Songgui"),
    ("新河", "Xinhe"), ("金霞", "Jinxia"), ("德雅", "Deya"), ("湘雅", "Xiangya"), ("蔡锷", "Cai'e"),
    ("藩城", "Fancheng"), ("府后", "Fuhou"), ("马厂", "Machang"), ("五家岭", "Wujialing"), ("砂子塘", "Shazitang"),
    ("树木岭", "Shumuling"), ("井湾子", "Jingwanzi"), ("侯家塘", "Houjiatang"), ("黄土岭", "Huangtuling"),
    ("仰天湖", "Yangtianhu"), ("大托", "Datuo"), ("新开铺", "Xinkaipu"),
]
#: Arterial road (主干道) names.
ARTERIAL_NAMES = ["人民路", "解放路", "建设大道", "五一大道", "芙蓉路", "韶山路", "劳动路", "八一路",
                  "湘江大道", "中山路", "东风路", "迎宾路", "黄兴路", "营盘路", "车站路", "曙光路"]
#: Secondary road (次干道) names.
SECONDARY_NAMES = [
    "文化路", "书院路", "桂花路", "白沙路", "城南路", "天心路", "古汉路", "识字岭路", "建湘路", "新民路",
    "育英路", "湘春路", "蔡锷路", "黄土岭路", "雨花路", "长岭路", "火炬路", "德雅路", "松桂路", "兴业路",
    "朝阳路", "和平路", "光明路", "园艺路", "金桥路", "红星路", "先锋路", "银杏路", "紫薇路", "梅溪路",
    "桃源路", "砂子塘路", "树木岭路", "井湾路", "侯家塘路", "仰天湖路", "新开路", "枫林路", "青园路", "燕山路",
    "南湖路", "北湖路", "清水路", "金霞路", "望城路", "丝茅路", "府后路", "马厂路",
]
#: Back-alley (背街小巷) names.
ALLEY_NAMES = [
    f"{a}{b}" for a in ["福寿", "太平", "西牌楼", "三兴", "学宫", "织机", "化龙", "碧湘", "都正", "白果园",
                        "东茅", "苏家", "犁头", "登仁", "福源", "吉祥", "玉泉", "仁美", "寿星", "连升",
                        "南倒脱靴", "樊西", "营盘", "洪家井", "三角花园", "藩后", "贡院", "荷花池"]
    for b in ["巷", "街", "里", "横巷"]
]

_M_PER_DEG_LAT = 110_850.0
_M_PER_DEG_LNG = 111_320.0 * np.cos(np.radians(CENTER_LAT))


# --------------------------------------------------------------------------------------------------
# Coordinates, density and random points
# --------------------------------------------------------------------------------------------------


def to_lnglat(geom):
    """Local metres (x east, y north from the centre) to WGS84 lon/lat."""
    return shapely.transform(geom, lambda c: np.column_stack(
        [CENTER_LNG + c[:, 0] / _M_PER_DEG_LNG, CENTER_LAT + c[:, 1] / _M_PER_DEG_LAT]))


def xy_to_lnglat(x, y):
    """Local metres to WGS84 lon/lat, as two arrays."""
    return CENTER_LNG + np.asarray(x) / _M_PER_DEG_LNG, CENTER_LAT + np.asarray(y) / _M_PER_DEG_LAT


def lnglat_to_xy(lng, lat):
    """WGS84 lon/lat to local metres, as an (n, 2) array."""
    return np.column_stack([(lng - CENTER_LNG) * _M_PER_DEG_LNG, (lat - CENTER_LAT) * _M_PER_DEG_LAT])


def density(x, y):
    """Relative population density: an old centre and a newer sub-centre to the south-east."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    return (0.15 + np.exp(-(x ** 2 + y ** 2) / (2 * 2600.0 ** 2))
            + 0.55 * np.exp(-((x - 3300) ** 2 + (y + 2400) ** 2) / (2 * 1300.0 ** 2)))


def points_in(poly, n, rng, *, weighted=False):
    """Uniform (or density-weighted) random points inside a polygon, as an (n, 2) array."""
    if n == 0:
        return np.zeros((0, 2))
    minx, miny, maxx, maxy = poly.bounds
    out = []
    got = 0
    shapely.prepare(poly)
    while got < n:
        m = max(64, 4 * (n - got))
        x = rng.uniform(minx, maxx, m)
        y = rng.uniform(miny, maxy, m)
        ok = shapely.contains_xy(poly, x, y)
        if weighted:
            ok &= rng.random(m) < density(x, y) / 1.8
        pts = np.column_stack([x[ok], y[ok]])[: n - got]
        out.append(pts)
        got += len(pts)
    return np.concatenate(out)


def _kmeans(xy, k, rng, iters=25):
    """Plain k-means on points; returns labels (deterministic for the generator state)."""
    k = max(1, min(k, len(xy)))
    centres = xy[rng.choice(len(xy), k, replace=False)]
    labels = np.zeros(len(xy), dtype=int)
    for _ in range(iters):
        d = ((xy[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
        labels = d.argmin(1)
        for j in range(k):
            if (labels == j).any():
                centres[j] = xy[labels == j].mean(0)
    return labels


def _fix_contiguity(polys, labels, parents):
    """Move grids cut off from their cluster to a touching cluster of the same parent."""
    labels = labels.copy()
    tree = shapely.STRtree(polys)
    for _ in range(5):
        changed = False
        for lab in np.unique(labels):
            members = np.flatnonzero(labels == lab)
            union = shapely.union_all(polys[members])
            if union.geom_type == "Polygon":
                continue
            main = max(union.geoms, key=lambda g: g.area)
            for i in members:
                if main.contains(shapely.point_on_surface(polys[i])):
                    continue
                near = tree.query(polys[i], predicate="touches")
                cand = [j for j in near if labels[j] != lab and parents[j] == parents[i]]
                if cand:
                    shared = [polys[i].boundary.intersection(polys[j].boundary).length for j in cand]
                    labels[i] = labels[cand[int(np.argmax(shared))]]
                    changed = True
        if not changed:
            break
    return labels


# --------------------------------------------------------------------------------------------------
# The city: boundary, roads, grids and areas (all in local metres)
# --------------------------------------------------------------------------------------------------


def _boundary(rng):
    theta = np.linspace(0, 2 * np.pi, 97)[:-1]
    a, b = HALF_AXES_M
    ph = rng.uniform(0, 2 * np.pi, 3)
    wobble = 1 + 0.06 * np.sin(3 * theta + ph[0]) + 0.04 * np.sin(5 * theta + ph[1]) + 0.02 * np.sin(9 * theta + ph[2])
    return shapely.Polygon(np.column_stack([a * np.cos(theta) * wobble, b * np.sin(theta) * wobble]))


def _wiggly(start, end, rng, step=350.0, sigma=18.0):
    """A slightly irregular polyline from start to end."""
    start, end = np.asarray(start, float), np.asarray(end, float)
    n = max(2, int(np.linalg.norm(end - start) / step) + 1)
    t = np.linspace(0, 1, n)
    pts = start + t[:, None] * (end - start)
    normal = np.array([-(end - start)[1], (end - start)[0]]) / np.linalg.norm(end - start)
    off = np.cumsum(rng.normal(0, sigma, n))
    off -= np.linspace(off[0], off[-1], n) * 0.5
    pts += off[:, None] * normal
    return shapely.LineString(pts)


def _clip(line, poly):
    inter = line.intersection(poly)
    if inter.is_empty:
        return None
    if inter.geom_type == "MultiLineString":
        inter = max(inter.geoms, key=lambda g: g.length)
    return inter if inter.geom_type == "LineString" and inter.length > 150 else None


def _roads(rng, boundary):
    """Arterials (a jittered lattice and two diagonals), secondary roads and back alleys."""
    a, b = HALF_AXES_M
    ext = 1.3
    arterial_names = list(rng.permutation(ARTERIAL_NAMES))
    secondary_names = list(rng.permutation(SECONDARY_NAMES))
    alley_names = list(rng.permutation(ALLEY_NAMES))
    roads = []  # dicts: name, kind, geom, axis, index
    xs = np.array([-4600, -2700, -900, 900, 2700, 4500]) + rng.normal(0, 120, 6)
    ys = np.array([-3600, -1700, 100, 1900, 3600]) + rng.normal(0, 120, 5)
    for i, x in enumerate(xs):
        g = _clip(_wiggly((x + rng.normal(0, 150), -b * ext), (x + rng.normal(0, 150), b * ext), rng), boundary)
        if g is not None:
            roads.append({"name": arterial_names.pop(), "kind": "arterial", "geom": g, "axis": "ns", "index": i})
    for j, y in enumerate(ys):
        g = _clip(_wiggly((-a * ext, y + rng.normal(0, 150)), (a * ext, y + rng.normal(0, 150)), rng), boundary)
        if g is not None:
            roads.append({"name": arterial_names.pop(), "kind": "arterial", "geom": g, "axis": "ew", "index": j})
    for sx, sy, ex, ey in ((-a * ext, -b * 0.9, a * 0.8, b * ext), (-a * 0.9, b * ext, a * ext, -b * 0.3)):
        g = _clip(_wiggly((sx, sy), (ex, ey), rng, sigma=25), boundary)
        if g is not None:
            roads.append({"name": arterial_names.pop(), "kind": "arterial", "geom": g, "axis": "diag", "index": -1})
    # Secondary roads: two between neighbouring arterials, each spanning part of the city.
    for axis, pos, half, _other in (("ns", xs, b, a), ("ew", ys, a, b)):
        edges = np.concatenate([[pos[0] - 1900], pos, [pos[-1] + 1900]])
        for lo, hi in pairwise(edges):
            for f in (1 / 3, 2 / 3):
                c = lo + f * (hi - lo) + rng.normal(0, 60)
                t0, t1 = sorted(rng.uniform(-1.2, 1.2, 2))
                if t1 - t0 < 0.5:
                    t0, t1 = -1.2, 1.2
                s, e = (c, t0 * half), (c, t1 * half)
                if axis == "ew":
                    s, e = (t0 * half, c), (t1 * half, c)
                g = _clip(_wiggly(s, e, rng, step=250, sigma=10), boundary)
                if g is not None and secondary_names:
                    roads.append({"name": secondary_names.pop(), "kind": "secondary", "geom": g, "axis": axis,
                                  "index": -1})
    # Back alleys: short, bent lanes inside blocks, more of them in dense parts.
    main = shapely.union_all([r["geom"] for r in roads]).buffer(40)
    shapely.prepare(main)
    inner = boundary.buffer(-250)
    starts = points_in(inner, 2500, rng, weighted=True)
    starts = starts[np.argsort(-density(starts[:, 0], starts[:, 1]) * rng.random(len(starts)))]
    for x, y in starts:
        if len([r for r in roads if r["kind"] == "alley"]) >= 220 or not alley_names:
            break
        ang = rng.choice([0.0, np.pi / 2]) + rng.normal(0, 0.25)
        length = rng.uniform(120, 380)
        d = np.array([np.cos(ang), np.sin(ang)])
        p0 = np.array([x, y])
        p1 = p0 + d * length * rng.uniform(0.35, 0.65)
        turn = rng.choice([-1, 1]) * rng.uniform(0.3, 1.57)
        d2 = np.array([np.cos(ang + turn), np.sin(ang + turn)])
        p2 = p1 + d2 * length * rng.uniform(0.3, 0.6)
        g = shapely.LineString([p0, p1, p2])
        if main.intersects(g) or not inner.contains(g):
            continue
        roads.append({"name": alley_names.pop(), "kind": "alley", "geom": g, "axis": "", "index": -1})
    return roads


def _grid_polygons(rng, boundary):
    """Micro-grids: a density-weighted, relaxed Voronoi tessellation clipped to the boundary."""
    seeds = points_in(boundary, N_GRIDS, rng, weighted=True)
    env = boundary.envelope.buffer(3000)
    for _ in range(3):  # Lloyd relaxation: more regular cells, density still varies
        cells = shapely.voronoi_polygons(shapely.MultiPoint(seeds), extend_to=env, ordered=True)
        cells = shapely.intersection(np.asarray(cells.geoms), boundary)
        seeds = shapely.get_coordinates(shapely.centroid(cells))
    cells = shapely.voronoi_polygons(shapely.MultiPoint(seeds), extend_to=env, ordered=True)
    cells = np.asarray(shapely.intersection(np.asarray(cells.geoms), boundary))
    polys = []
    for c in cells:  # a cell cut in two by a concave boundary keeps its largest part
        if c.geom_type != "Polygon":
            c = max(c.geoms, key=lambda g: g.area)
        polys.append(c)
    return np.asarray(polys, dtype=object)


def _hierarchy(rng, polys):
    """Assign grids to districts (sectors), streets and communities (k-means), contiguous."""
    cen = shapely.get_coordinates(shapely.centroid(polys))
    n = len(polys)
    theta0 = rng.uniform(0, 2 * np.pi)
    ang = (np.arctan2(cen[:, 1] - 300, cen[:, 0] + 200) - theta0) % (2 * np.pi)
    cuts = np.sort(np.cumsum(rng.dirichlet([8, 8, 8, 8])) * 2 * np.pi)[:-1]
    district = np.searchsorted(cuts, ang)
    street = np.zeros(n, dtype=int)
    community = np.zeros(n, dtype=int)
    n_streets = 0
    for d in range(len(DISTRICTS)):
        idx = np.flatnonzero(district == d)
        lab = _kmeans(cen[idx], STREETS_PER_DISTRICT[d], rng)
        street[idx] = lab + n_streets
        n_streets += lab.max() + 1
    street = _fix_contiguity(polys, street, district)
    n_comm = 0
    for s in np.unique(street):
        idx = np.flatnonzero(street == s)
        k = max(2, round(len(idx) / GRIDS_PER_COMMUNITY))
        lab = _kmeans(cen[idx], k, rng)
        community[idx] = lab + n_comm
        n_comm += lab.max() + 1
    community = _fix_contiguity(polys, community, street)
    return district, street, community


def _order(labels, cen, parent=None):
    """Renumber labels 0.. ordered by parent then north-to-south, west-to-east."""
    uniq = np.unique(labels)
    keys = []
    for u in uniq:
        c = cen[labels == u].mean(0)
        p = parent[labels == u][0] if parent is not None else 0
        keys.append((p, -round(c[1] / 800), c[0]))
    order = sorted(range(len(uniq)), key=lambda i: keys[i])
    remap = {uniq[i]: r for r, i in enumerate(order)}
    return np.array([remap[v] for v in labels])


def build_city(rng):
    """Boundary, roads, micro-grids and the area hierarchy with codes and names (metres and lon/lat).

    Parameters
    ----------
    rng : numpy.random.Generator
        The demo's random generator (advanced by the call).

    Returns
    -------
    dict
        ``boundary``, ``roads`` (dicts of name, kind, geom), ``polys`` (grids in metres), ``grids_ll`` (in
        lon/lat), the ``district``, ``street`` and ``community`` index of each grid, their names and codes
        (``street_names``, ``comm_names``, ``s_code``, ``c_code``), ``grid_code``, ``grid_name``,
        ``households`` and ``areas_m`` (name and polygon per level, in metres).
    """
    boundary = _boundary(rng)
    roads = _roads(rng, boundary)
    polys = _grid_polygons(rng, boundary)
    district, street, community = _hierarchy(rng, polys)
    cen = shapely.get_coordinates(shapely.centroid(polys))
    district = _order(district, cen)
    street = _order(street, cen, district)
    community = _order(community, cen, street)
    n_s, n_c = street.max() + 1, community.max() + 1
    street_names = [STREET_NAMES[i] for i in rng.permutation(len(STREET_NAMES))[:n_s]]
    comm_pool = [COMMUNITY_NAMES[i] for i in rng.permutation(len(COMMUNITY_NAMES))]
    comm_names = [comm_pool[i] if i < len(comm_pool) else (f"第{i + 1}", f"No. {i + 1}") for i in range(n_c)]
    # Codes: county + street serial + community serial + grid serial.
    s_code, c_code = {}, {}
    for s in range(n_s):
        d = district[street == s][0]
        k = len([1 for t in range(s) if district[street == t][0] == d]) + 1
        s_code[s] = f"{DISTRICTS[d][0]}{k:03d}"
    for c in range(n_c):
        s = street[community == c][0]
        k = len([1 for t in range(c) if street[community == t][0] == s]) + 1
        c_code[c] = f"{s_code[s]}{k:03d}"
    order = np.lexsort((cen[:, 0], -np.round(cen[:, 1] / 400), community))
    grid_code = np.empty(len(polys), dtype=object)
    grid_name = np.empty(len(polys), dtype=object)
    serial: dict[int, int] = {}
    for i in order:
        c = community[i]
        serial[c] = serial.get(c, 0) + 1
        grid_code[i] = f"{c_code[c]}{serial[c]:03d}"
        grid_name[i] = f"{comm_names[c][0]}社区第{serial[c]}网格"
    dens = density(cen[:, 0], cen[:, 1])
    households = np.clip(np.round(rng.lognormal(np.log(170 + 420 * dens / dens.max()), 0.22)), 150, 800)
    grids_ll = shapely.set_precision(to_lnglat(polys), 1e-7)
    areas_m = {
        "district": [(DISTRICTS[d][1], shapely.union_all(polys[district == d])) for d in range(district.max() + 1)],
        "street": [(street_names[s][0], shapely.union_all(polys[street == s])) for s in range(n_s)],
        "community": [(comm_names[c][0], shapely.union_all(polys[community == c])) for c in range(n_c)],
    }
    return {
        "boundary": boundary, "roads": roads, "polys": polys, "grids_ll": grids_ll, "district": district,
        "street": street, "community": community, "street_names": street_names, "comm_names": comm_names,
        "s_code": s_code, "c_code": c_code, "grid_code": grid_code, "grid_name": grid_name,
        "households": households.astype(int), "areas_m": areas_m,
    }
