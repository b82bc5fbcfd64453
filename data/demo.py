"""The built-in demo city (示范市): a generated, deterministic city with grids, sites, inspections and events."""

from __future__ import annotations

import os
import time as _time
from datetime import datetime
from itertools import pairwise

import numpy as np
import pyarrow as pa
import shapely
from civicgrid.geo.store import writing
from civicgrid.grids.locate import locate_points, location_arrays
from civicgrid.sites.cases import backfill
from shapely import ops
from tqdm.auto import tqdm

# --------------------------------------------------------------------------------------------------
# Reference lists and parameters
# --------------------------------------------------------------------------------------------------

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
#: Surnames and given names for people (grid leaders, contacts, inspectors).
SURNAMES = list("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程魏苏吕丁任沈姚")
GIVEN_NAMES = ["伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明", "超",
               "秀英", "霞", "平", "刚", "桂英", "建华", "志强", "海燕", "文静", "晓东", "红梅", "国庆", "建国",
               "卫东", "春华", "丽娟", "小龙", "思远", "子涵", "雨婷", "浩然", "欣怡", "俊杰", "婷婷", "鹏",
               "辉", "晨", "琳", "颖", "波", "宁", "斌", "凯"]
#: Mobile number prefixes.
MOBILE_PREFIXES = ["130", "131", "132", "133", "135", "136", "137", "138", "139", "150", "151", "152", "153",
                   "155", "156", "157", "158", "159", "180", "181", "182", "183", "185", "186", "187", "188", "189"]
#: Landline area code of the demo city (its units' office phones).
AREA_CODE = "0731"
#: Number of inspectors (督查员) and the share of them who detect about 1.5x more problems.
N_INSPECTORS = 20

#: Sample-frame size per category for categories with a fixed count (others follow the hierarchy).
SITE_COUNTS = {
    "02": 5, "03": 80, "04": 30, "05": 250, "06": 20, "07": 25, "08": 4, "09": 100, "10": 10, "11": 14,
    "12": 5, "13": 60, "14": 300, "15": 40, "16": 20, "17": 15, "18": 10, "19": 10, "20": 15, "21": 4,
    "22": 5, "24": 60, "26": 50, "27": 30, "28": 30, "29": 8, "30": 80, "31": 40, "36": 150, "37": 6,
    "38": 36,
}
#: Complaint attraction of one site, per category (relative; categories not listed: 0.5).
SITE_COMPLAINT_WEIGHT = {
    "16": 40, "25": 14, "30": 9, "38": 25, "14": 1.2, "05": 1.2, "09": 2, "36": 4, "28": 8, "29": 10,
    "31": 2, "37": 20, "27": 1, "11": 5, "10": 4, "12": 4, "08": 15, "17": 5, "15": 2, "06": 2,
}
#: Inspection visit frequency of one site, per category (relative; not listed: 1).
SITE_VISIT_WEIGHT = {
    "16": 14, "25": 8, "38": 9, "30": 5, "28": 5, "29": 6, "37": 6, "08": 6, "05": 1.2, "14": 0.8,
    "36": 2, "09": 2, "11": 3, "10": 3, "12": 3, "31": 3, "06": 3, "17": 2, "24": 2,
}
#: Mean problems found per visit, per category, before scaling (not listed: 0.35).
SITE_RISK = {
    "16": 1.7, "38": 1.4, "30": 1.3, "37": 1.5, "25": 1.0, "28": 1.0, "29": 1.0, "08": 1.0, "36": 0.7,
    "31": 0.7, "05": 0.6, "09": 0.6, "11": 0.6, "10": 0.6, "12": 0.6, "14": 0.6, "06": 0.6,
}
#: Problem types found at each category (relative weights); categories not listed use DEFAULT_SITE_PROFILE.
SITE_PROFILES = {
    "16": {"0201": 5, "0203": 4, "0101": 4, "0104": 2, "0102": 1, "0103": 2, "0202": 2, "0301": 1, "0302": 1},
    "25": {"0801": 7, "0203": 2, "0301": 2, "0302": 1, "0207": 1},
    "24": {"0501": 2, "0502": 1, "0404": 1, "0303": 1, "0301": 1},
    "30": {"0204": 4, "0209": 3, "0102": 4, "0407": 3, "0205": 2, "0207": 2, "0208": 1, "0106": 1, "0402": 1},
    "38": {"0601": 5, "0604": 5, "0603": 3, "0602": 2, "0103": 1},
    "14": {"0202": 3, "0101": 2, "0104": 1, "0206": 1, "0301": 1},
    "05": {"0302": 3, "0207": 2, "0404": 2, "0502": 1, "0501": 1, "0703": 0.3},
    "09": {"0105": 6, "0404": 1, "0406": 1},
    "36": {"0301": 3, "0303": 3, "0106": 2, "0701": 2, "0205": 1, "0204": 1, "0104": 2, "0209": 1, "0302": 1},
    "28": {"0401": 2, "0402": 2, "0403": 2, "0405": 2, "0103": 2, "0301": 2, "0302": 2, "0304": 1,
           "0305": 1, "0501": 2, "0206": 1},
    "29": {"0202": 3, "0201": 2, "0206": 2, "0302": 2, "0103": 1, "0501": 1, "0203": 1},
    "31": {"0304": 3, "0305": 3, "0302": 1, "0404": 1},
    "37": {"0102": 4, "0209": 3, "0101": 2, "0604": 1, "0204": 2},
    "27": {"0802": 4, "0206": 1},
    "11": {"0106": 2, "0701": 3, "0101": 2, "0404": 2, "0105": 1, "0702": 1, "0703": 1, "0203": 1, "0501": 1},
    "10": {"0106": 2, "0701": 3, "0101": 2, "0404": 2, "0702": 1, "0703": 1, "0203": 2, "0501": 1},
    "12": {"0101": 2, "0404": 2, "0105": 1, "0702": 1, "0703": 1, "0203": 2, "0501": 1, "0502": 1},
    "08": {"0203": 2, "0301": 2, "0703": 2, "0101": 1, "0702": 1, "0404": 1, "0302": 1},
    "07": {"0301": 2, "0103": 1, "0404": 1},
    "06": {"0502": 1, "0404": 1, "0702": 1, "0501": 1},
    "15": {"0302": 2, "0202": 1, "0206": 1, "0501": 1, "0406": 1},
    "13": {"0206": 1, "0501": 1, "0406": 1, "0301": 1},
    "17": {"0301": 3, "0302": 2, "0203": 1, "0101": 1, "0406": 1},
    "26": {"0206": 2, "0301": 1, "0501": 1},
}
#: Problem profile of sites whose category is not in SITE_PROFILES.
DEFAULT_SITE_PROFILE = {"0501": 2, "0502": 2, "0406": 2, "0404": 1, "0206": 0.5, "0302": 1}
#: Problem types of complaints not tied to a site (spread by households).
BACKGROUND_PROFILE = {
    "0301": 8, "0302": 6, "0101": 5, "0104": 4, "0103": 3, "0106": 3, "0701": 3, "0204": 2, "0205": 1,
    "0207": 2, "0208": 1, "0209": 1, "0303": 2, "0401": 2, "0402": 2, "0403": 1.5, "0404": 2, "0405": 2,
    "0407": 1, "0408": 1, "0702": 0.5, "0703": 0.5, "0203": 2, "0201": 2, "0202": 2, "0105": 0.5,
    "0304": 0.3, "0305": 0.5, "0206": 0.5, "0102": 1.5,
}
#: How readily citizens phone in a problem type (relative; not listed: 1).
COMPLAINT_TYPE_FACTOR = {"0501": 0.05, "0502": 0.1, "0406": 0.3, "0304": 0.2, "0702": 0.3, "0206": 0.4}
#: How readily inspectors record a problem type (relative; not listed: 1).
INSPECTION_TYPE_FACTOR = {"0501": 2.0, "0502": 2.0, "0406": 1.5, "0701": 0.5, "0802": 1.5, "0304": 1.2}
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
#: Openings of complaint texts.
COMPLAINT_PREFIXES = ["市民反映", "来电反映", "", "群众投诉"]

#: Time range of the generated events: 2024-01-01 .. 2025-12-31 (local time, Asia/Shanghai).
START = np.datetime64("2024-01-01")
END = np.datetime64("2026-01-01")
N_DAYS = int((END - START).astype(int))
#: Mock assessments (模拟测评): inspections and complaints surge in the 4 weeks before each.
ASSESSMENTS = [("2024-05-20", "2024-05-24"), ("2024-10-21", "2024-10-25"),
               ("2025-05-19", "2025-05-23"), ("2025-10-20", "2025-10-24")]
#: Public holidays (no routine inspections; working-time deadlines skip them).
HOLIDAYS = np.array([
    *np.arange("2024-01-01", "2024-01-02", dtype="M8[D]"), *np.arange("2024-02-10", "2024-02-18", dtype="M8[D]"),
    *np.arange("2024-04-04", "2024-04-07", dtype="M8[D]"), *np.arange("2024-05-01", "2024-05-06", dtype="M8[D]"),
    *np.arange("2024-06-10", "2024-06-11", dtype="M8[D]"), *np.arange("2024-09-15", "2024-09-18", dtype="M8[D]"),
    *np.arange("2024-10-01", "2024-10-08", dtype="M8[D]"), *np.arange("2025-01-01", "2025-01-02", dtype="M8[D]"),
    *np.arange("2025-01-28", "2025-02-05", dtype="M8[D]"), *np.arange("2025-04-04", "2025-04-07", dtype="M8[D]"),
    *np.arange("2025-05-01", "2025-05-06", dtype="M8[D]"), *np.arange("2025-05-31", "2025-06-03", dtype="M8[D]"),
    *np.arange("2025-10-01", "2025-10-09", dtype="M8[D]"), *np.arange("2026-01-01", "2026-01-04", dtype="M8[D]"),
    *np.arange("2026-02-15", "2026-02-24", dtype="M8[D]"),
], dtype="M8[D]")
#: School holidays (no school-gate hawking, no school-gate patrols).
SCHOOL_VACATIONS = [("2024-01-20", "2024-02-25"), ("2024-07-06", "2024-08-31"),
                    ("2025-01-18", "2025-02-16"), ("2025-07-05", "2025-08-31"), ("2025-12-31", "2026-01-01")]
#: Spring Festival days (fewer complaints: people away).
SPRING_FESTIVALS = ["2024-02-10", "2025-01-29"]
#: Episodes an analyst can find: (kind, category, first day, last day, problem types, share of complaints).
EPISODES = [
    ("night_market", "29", "2025-06-01", "2025-09-30", {"0203": 4, "0201": 3, "0101": 2, "0301": 1}, 0.015),
    ("rectified", "30", "2024-01-01", "2024-06-15", {"0102": 3, "0204": 3, "0209": 2, "0407": 1}, 0.012),
    ("emerging", "36", "2025-03-01", "2025-12-31", {"0303": 3, "0301": 3, "0302": 1}, 0.010),
]
#: Shares of events: inspection hits (the rest are complaints), and points just outside the grids.
HIT_SHARE = 0.40
OUTSIDE_SHARE = 0.005
#: Share of complaints spread by households rather than drawn to a site.
BACKGROUND_SHARE = 0.52
#: Events per insertion chunk, and DuckDB's memory limit while the demo is written.
CHUNK = 1_000_000
DUCKDB_MEMORY = "2GB"

_M_PER_DEG_LAT = 110_850.0
_M_PER_DEG_LNG = 111_320.0 * np.cos(np.radians(CENTER_LAT))
_K_ANCHORS = 24


# --------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------


def _to_lnglat(geom):
    """Local metres (x east, y north from the centre) to WGS84 lon/lat."""
    return shapely.transform(geom, lambda c: np.column_stack(
        [CENTER_LNG + c[:, 0] / _M_PER_DEG_LNG, CENTER_LAT + c[:, 1] / _M_PER_DEG_LAT]))


def _xy_to_lnglat(x, y):
    return CENTER_LNG + np.asarray(x) / _M_PER_DEG_LNG, CENTER_LAT + np.asarray(y) / _M_PER_DEG_LAT


def _density(x, y):
    """Relative population density: an old centre and a newer sub-centre to the south-east."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    return (0.15 + np.exp(-(x ** 2 + y ** 2) / (2 * 2600.0 ** 2))
            + 0.55 * np.exp(-((x - 3300) ** 2 + (y + 2400) ** 2) / (2 * 1300.0 ** 2)))


def _person(rng, n):
    s = rng.choice(SURNAMES, n)
    g = rng.choice(GIVEN_NAMES, n)
    return [a + b for a, b in zip(s, g, strict=True)]


def _mobile(rng, n):
    pre = rng.choice(MOBILE_PREFIXES, n)
    num = rng.integers(0, 100_000_000, n)
    return [f"{p}{k:08d}" for p, k in zip(pre, num, strict=True)]


def _phone(rng, n, landline_share=0.4):
    mob = _mobile(rng, n)
    land = rng.integers(82_000_000, 89_999_999, n)
    use = rng.random(n) < landline_share
    return [f"{AREA_CODE}-{k}" if u else m for m, k, u in zip(mob, land, use, strict=True)]


def _points_in(poly, n, rng, *, weighted=False):
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
            ok &= rng.random(m) < _density(x, y) / 1.8
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
    starts = _points_in(inner, 2500, rng, weighted=True)
    starts = starts[np.argsort(-_density(starts[:, 0], starts[:, 1]) * rng.random(len(starts)))]
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
    seeds = _points_in(boundary, N_GRIDS, rng, weighted=True)
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


# --------------------------------------------------------------------------------------------------
# The sample frame (样本框)
# --------------------------------------------------------------------------------------------------

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
_VILLAGES = ["马坡岭", "新塘", "黄花", "杨家湾", "牛角冲", "桐木", "大塘冲", "石门", "白泥湖", "花桥"]
_BUILDERS = ["中建五局", "中铁建工", "湖南建工", "中交一公局", "远大住工", "省六建", "中建三局", "城建集团"]
_PROJECTS = ["安置房项目", "商业综合体项目", "学校新建项目", "医院扩建项目", "地铁站项目", "道路提质改造项目",
             "棚户区改造项目", "住宅项目", "产业园项目"]


def _stem(road):
    return road[:-2] if road.endswith("大道") else road[:-1] if road[-1] in "路街巷里" else road


def _unique(names):
    seen: dict[str, int] = {}
    out = []
    for n in names:
        k = seen.get(n, 0)
        seen[n] = k + 1
        out.append(n if k == 0 else f"{n}（{'一二三四五六七八九十'[min(k, 9)]}）" if k < 10 else f"{n}（{k + 1}）")
    return out


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

    def add(self, cat, name, geom, **extra):
        self.rows.append({"category_code": cat, "name": name, "geom": geom, **extra})

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
        w = _density(xy[:, 0], xy[:, 1]) ** power * ok
        pick = rng.choice(m, min(n, int(ok.sum())), replace=False, p=w / w.sum())
        return xy[pick], r[pick]

    def place_area(self, n, make, *, avoid="major", within=None, power=1.0, tries=60):
        """Polygons from ``make(x, y)`` at density-weighted places, not overlapping roads or other areas."""
        rng = self.rng
        region = self.inner if within is None else within
        out = []
        for _ in range(n):
            for _t in range(tries):
                x, y = _points_in(region, 1, rng, weighted=power > 0)[0]
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


def _build_frame(rng, boundary, roads, areas):
    """Generate the sample frame over all 38 categories; returns a list of site dicts (metres)."""
    f = _Frame(rng, boundary, roads, areas)
    names = [r["name"] for r in roads]
    pt = shapely.Point

    def at_road(cat, n, make_name, **kw):
        xy, r = f.roadside(n, **kw)
        for (x, y), k in zip(xy, r, strict=True):
            f.add(cat, make_name(names[k]), pt(x, y))

    # Areas first (they claim space), big ones first.
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
    # Schools and their 200 m surroundings.
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
            nm = f"{_stem(names[_nearest_road(f, c)])}小学"
        else:
            nm = f"{rng.choice(comm_names)}幼儿园"
        f.add("24", nm, g)
    school_rows = [r for r in f.rows if r["category_code"] == "24"]
    school_rows_names = _unique([r["name"] for r in school_rows])
    for r, nm in zip(school_rows, school_rows_names, strict=True):
        r["name"] = nm
    for r in school_rows:
        ring = r["geom"].buffer(200).difference(r["geom"])
        # School gates: where hawkers wait at dismissal time.
        gates = shapely.get_coordinates(shapely.line_interpolate_point(
            r["geom"].exterior, rng.random(2), normalized=True))
        f.add("25", f"{r['name']}周边", ring, gates=gates)
    # Markets, compounds, construction sites.
    for g in f.place_area(SITE_COUNTS["16"], lambda x, y: _rect(x, y, rng.uniform(60, 140), rng.uniform(50, 110),
                                                                rng.normal(0, 0.15)), power=1.5):
        c = shapely.get_coordinates(g.centroid)[0]
        f.add("16", f"{_stem(names[_nearest_road(f, c)])}"
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
        f.add("38", f"{builder}{_stem(names[_nearest_road(f, c)])}{rng.choice(_PROJECTS)}工地", g, builder=builder)
    # Urban-rural fringe: wedges of the outer band.
    band = boundary.difference(boundary.buffer(-700))
    starts = np.sort(rng.choice(np.arange(0, 360, 40), SITE_COUNTS["37"], replace=False)) + rng.uniform(0, 8)
    for a0, vil in zip(starts, rng.permutation(_VILLAGES), strict=False):
        a1 = np.radians(a0 + rng.uniform(14, 26))
        a0 = np.radians(a0)
        wedge = shapely.Polygon([(0, 0), (9000 * np.cos(a0), 9000 * np.sin(a0)),
                                 (9000 * np.cos((a0 + a1) / 2), 9000 * np.sin((a0 + a1) / 2)),
                                 (9000 * np.cos(a1), 9000 * np.sin(a1))])
        g = band.intersection(wedge)
        if g.geom_type == "MultiPolygon":
            g = max(g.geoms, key=lambda p: p.area)
        f.add("37", f"{vil}城乡接合部", g)

    # Lines: main roads, commercial streets, alleys, bus lines.
    major = sorted(f.major, key=lambda i: (roads[i]["kind"] != "arterial", -roads[i]["geom"].length))
    for i in major[: SITE_COUNTS["28"]]:
        f.add("28", names[i], roads[i]["geom"], road=i)
    sec = [i for i in f.major if roads[i]["kind"] == "secondary"]
    sec = sorted(sec, key=lambda i: -_density(*shapely.get_coordinates(roads[i]["geom"].centroid)[0]))
    for i in sec[: SITE_COUNTS["29"]]:
        g = roads[i]["geom"]
        proj = g.project(shapely.Point(0, 0).buffer(1).centroid)  # nearest the centre
        seg = ops.substring(g, max(0, proj - rng.uniform(250, 450)), min(g.length, proj + rng.uniform(250, 450)))
        suffix = rng.choice(["商业街", "步行街", "美食街"])
        f.add("29", f"{_stem(names[i])}{suffix}", seg, road=i)
    al = np.array(f.alleys)
    w = np.array([_density(*shapely.get_coordinates(roads[i]["geom"].centroid)[0]) for i in al]) ** 2
    for i in np.sort(rng.choice(al, min(SITE_COUNTS["30"], len(al)), replace=False, p=w / w.sum())):
        f.add("30", names[i], roads[i]["geom"], road=i)
    for nm, g in zip(_unique([f"{k}路公交车" for k in np.sort(rng.choice(np.arange(1, 160), SITE_COUNTS["06"],
                                                                     replace=False))]),
                     _bus_lines(rng, roads, SITE_COUNTS["06"]), strict=False):
        f.add("06", nm, g)

    # Points tied to the hierarchy.
    for level, cats in (("district", ["01", "02", "22"]), ("street", ["01", "32", "33", "23"]),
                        ("community", ["34", "35"])):
        for nm, poly in areas[level]:
            c = _points_in(poly.buffer(-60) if poly.buffer(-60).area > 0 else poly, 1, rng, weighted=True)[0]
            for k, cat in enumerate(cats):
                xy = c if k == 0 else c + rng.normal(0, 30, 2)
                label = {
                    ("district", "01"): f"{nm}新时代文明实践中心", ("district", "02"): f"{nm}政务服务中心",
                    ("district", "22"): f"{nm}青少年活动中心", ("street", "01"): f"{nm}街道新时代文明实践所",
                    ("street", "32"): f"{nm}街道办事处", ("street", "33"): f"{nm}街道综合文化站",
                    ("street", "23"): f"{nm}街道未成年人心理健康辅导站", ("community", "34"): f"{nm}社区居委会",
                    ("community", "35"): f"{nm}社区综合文化服务中心",
                }[(level, cat)]
                f.add(cat, label, pt(*xy))
    n_extra_halls = SITE_COUNTS["02"] - len(areas["district"])
    for k, ((x, y), _r) in enumerate(zip(*f.roadside(max(n_extra_halls, 0), power=3), strict=True)):
        f.add("02", "示范市政务服务中心" if k == 0 else f"示范市政务服务中心{k + 1}号分厅", pt(x, y))
    n_youth = SITE_COUNTS["22"] - len(areas["district"])
    for (x, y), _r in zip(*f.roadside(max(n_youth, 0), power=3), strict=True):
        f.add("22", "示范市青少年宫", pt(x, y))

    # Points beside roads.
    at_road("03", SITE_COUNTS["03"], lambda r: f"{rng.choice(_BANKS)}{_stem(r)}支行", power=2)
    at_road("04", SITE_COUNTS["04"], lambda r: f"{rng.choice(_COUNTERS)}（{r}）", power=1.5)
    at_road("05", SITE_COUNTS["05"], lambda r: f"{r}{rng.choice(['口', '东', '西', '南', '北', '中'])}站",
            setback=(6, 10), power=0.7)
    at_road("07", SITE_COUNTS["07"], lambda r: f"{r}出租车候客点", setback=(6, 10), power=2)
    for (x, y), _r, nm in zip(*f.roadside(SITE_COUNTS["08"], power=0.5, setback=(60, 120)), _STATIONS,
                              strict=False):
        f.add("08", nm, pt(x, y))
    at_road("09", SITE_COUNTS["09"], lambda r: f"{r}公厕", pool=np.arange(len(roads)), power=1.0)
    at_road("13", SITE_COUNTS["13"], lambda r: f"{rng.choice(_HOTELS)}（{r}店）", power=2)
    at_road("14", SITE_COUNTS["14"], lambda r: f"{rng.choice(_EATERIES)}{rng.choice(_DISHES)}（{r}店）", power=2)
    at_road("15", SITE_COUNTS["15"], lambda r: f"{rng.choice(_MALLS)}（{r}店）", power=2)
    hosp = iter(_HOSPITALS)
    dnames = [nm for nm, _ in areas["district"]]
    at_road("17", SITE_COUNTS["17"],
            lambda r: next(hosp, None) or (f"{rng.choice(dnames)}"
                                           f"{rng.choice(['人民医院', '中医院', '社区卫生服务中心', '妇幼保健所'])}"),
            setback=(40, 80), power=2)
    cult = iter(_CULTURE)
    at_road("18", SITE_COUNTS["18"],
            lambda r: next(cult, None) or f"{rng.choice(dnames)}{rng.choice(['图书馆', '文化馆'])}",
            setback=(40, 80), power=2)
    at_road("19", SITE_COUNTS["19"], lambda r: f"{rng.choice(_CINEMAS)}（{r}店）", power=2)
    at_road("20", SITE_COUNTS["20"], lambda r: f"{rng.choice(_BOOKSHOPS)}（{r}店）", power=2)
    pat = iter(_PATRIOTIC)
    at_road("21", SITE_COUNTS["21"], lambda r: next(pat, None) or f"{_stem(r)}纪念馆", setback=(40, 80))
    at_road("26", SITE_COUNTS["26"], lambda r: f"{rng.choice(_TUTORS)}（{r}校区）", power=2)
    at_road("27", SITE_COUNTS["27"], lambda r: f"{rng.choice(_NETBARS)}（{r}店）", power=1.5)
    for nm, p in _intersections(rng, roads, SITE_COUNTS["31"]):
        f.add("31", nm, p)
    rows = f.rows
    for r, nm in zip(rows, _unique([r["name"] for r in rows]), strict=True):
        r["name"] = nm
    return rows


def _nearest_road(f, xy):
    tree = getattr(f, "_tree", None)
    if tree is None:
        tree = f._tree = shapely.STRtree(f.road_geoms)
    return int(tree.query_nearest(shapely.Point(*xy))[0])


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
                    found.append((rank, -float(_density(q.x, q.y)), f"{ra['name']}与{rb['name']}交叉口", q))
    found.sort(key=lambda t: (t[0], t[1]))
    out = found[:n]
    return [(nm, q) for _, _, nm, q in out]


# --------------------------------------------------------------------------------------------------
# Time: daily intensity profiles, times of day, working-time deadlines
# --------------------------------------------------------------------------------------------------

_DAY_S = 86_400
_DATES = np.arange(START, END, dtype="M8[D]")
_PROFILE_OF_MAJOR = {"01": 0, "02": 1, "03": 2, "04": 3, "05": 4, "06": 5, "07": 6, "08": 7}
#: Complaint profiles: (summer amplitude, peak day of year, weekend factor) per problem class.
_COMPLAINT_SEASONS = [(0.35, 205, 1.15), (0.20, 200, 1.30), (0.05, 100, 1.10), (0.25, 165, 0.80),
                      (0.0, 0, 0.60), (0.15, 170, 0.50), (0.25, 200, 1.50), (0.0, 0, 1.0),
                      (0.0, 0, 0.0), (0.10, 210, 1.60)]


def _in_ranges(ranges, pad_before=0):
    m = np.zeros(N_DAYS, dtype=bool)
    dates = _DATES
    for a, b in ranges:
        m |= (dates >= np.datetime64(a) - pad_before) & (dates <= np.datetime64(b))
    return m


def _campaign_ramp():
    """0 outside, rising linearly to 1 over the 4 weeks before each mock assessment, 1 during it."""
    r = np.zeros(N_DAYS)
    dates = _DATES
    for a, b in ASSESSMENTS:
        a, b = np.datetime64(a), np.datetime64(b)
        d = (dates - (a - 28)).astype(int)
        up = (d >= 0) & (dates < a)
        r[up] = np.maximum(r[up], (d[up] + 1) / 28)
        r[(dates >= a) & (dates <= b)] = 1.0
    return r


def _daily_profiles():
    """Daily weights (10 complaint profiles, 2 inspection profiles) as cumulative sums for sampling."""
    dow = (_DATES.astype("int64") + 3) % 7
    weekend = dow >= 5
    holiday = np.isin(_DATES, HOLIDAYS)
    vacation = _in_ranges(SCHOOL_VACATIONS)
    doy = (_DATES - _DATES.astype("M8[Y]")).astype(int)
    ramp = _campaign_ramp()
    cny = np.zeros(N_DAYS, dtype=bool)
    for d in SPRING_FESTIVALS:
        cny |= np.abs((_DATES - np.datetime64(d)).astype(int)) <= 7
    trend = 1 + 0.12 * np.arange(N_DAYS) / N_DAYS
    comp = np.zeros((len(_COMPLAINT_SEASONS), N_DAYS))
    for p, (amp, peak, wk) in enumerate(_COMPLAINT_SEASONS):
        w = (1 + amp * np.cos(2 * np.pi * (doy - peak) / 365.25)) * np.where(weekend | holiday, wk, 1.0)
        w *= np.where(cny, 0.3 if p == 5 else 0.55, 1.0) * (1 + 0.35 * ramp) * trend
        comp[p] = w
    comp[8] = np.where(weekend | holiday | vacation, 0.01, 1.0) * (1 + 0.35 * ramp)
    comp[9] *= np.where(vacation, 1.8, 1.0)
    summer = np.isin((_DATES.astype("M8[M]").astype(int) % 12) + 1, [7, 8])
    insp = np.where(holiday, 0.02, np.where(weekend, 0.05, 1.0)) * (1 + 1.6 * ramp) * np.where(summer, 0.85, 1.0)
    insp_school = insp * np.where(vacation, 0.0, 1.0)

    def cum(w):
        return np.concatenate([np.zeros((w.shape[0], 1)), np.cumsum(w, axis=1)], axis=1)

    return cum(comp), cum(np.vstack([insp, insp_school])), ramp


def _sample_days(cdf, a, b, u):
    """Days in [a, b) drawn from the daily weights whose cumulative sum is ``cdf``."""
    lo, hi = cdf[a], cdf[b]
    d = np.searchsorted(cdf, lo + u * (hi - lo), side="right") - 1
    return np.clip(d, a, np.maximum(b - 1, a))


def _quarter_hours(codes):
    """Time-of-day weights in 15-minute bins: one row per problem type (complaints)."""
    hourly = np.array([0.2, 0.1, 0.05, 0.05, 0.05, 0.1, 0.3, 0.8, 1.5, 2.0, 2.0, 1.8,
                       1.2, 1.2, 1.6, 1.8, 1.8, 1.6, 1.4, 1.6, 1.5, 1.2, 0.8, 0.4])
    base = np.repeat(hourly, 4)
    out = np.tile(base, (len(codes), 1))
    h = np.arange(96) / 4
    for i, c in enumerate(codes):
        if c == "0801":  # hawkers at the school gate: dismissal 16:00-17:30, some at 7:00-7:45
            out[i] = np.where((h >= 16) & (h < 17.5), 6.0, 0) + np.where((h >= 7) & (h < 7.75), 3.0, 0) + 0.01
        elif c == "0604":  # muck trucks run at night
            out[i] = base * np.where((h >= 22) | (h < 5), 8.0, 1.0)
        elif c in ("0203", "0201"):
            out[i] = base * np.where(((h >= 11) & (h < 13)) | ((h >= 17) & (h < 22)), 2.0, 1.0)
        elif c == "0701":
            out[i] = base * np.where(((h >= 6) & (h < 8.5)) | ((h >= 19) & (h < 22)), 2.5, 1.0)
        elif c == "0802":
            out[i] = base * np.where((h >= 19) | (h < 2), 3.0, 1.0)
        elif c[:2] in ("04", "05"):
            out[i] = base * np.where((h >= 8) & (h < 18), 1.5, 0.5)
    return out / out.sum(1, keepdims=True)


def _inspection_quarters():
    """Time-of-day weights of inspection visits: general, school gates, morning markets."""
    h = np.arange(96) / 4
    work = (((h >= 8.5) & (h < 11.75)) | ((h >= 14.5) & (h < 17.75))).astype(float)
    school = np.where((h >= 16) & (h < 17.5), 7.0, 0) + np.where((h >= 7) & (h < 8), 3.0, 0) + 0.3 * work
    market = work + np.where((h >= 7) & (h < 11), 1.5, 0)
    out = np.vstack([work, school, market])
    return out / out.sum(1, keepdims=True)


def _deadlines(t, value, unit_hours):
    """Deadline (seconds since START) from working days or working hours (9:00-18:00, Mon-Fri, not holidays)."""
    day = t // _DAY_S
    tod = t - day * _DAY_S
    dates = START + day.astype("timedelta64[D]")
    busy = np.is_busday(dates, holidays=HOLIDAYS)
    out = np.empty(len(t), dtype=np.int64)
    wd = ~unit_hours
    if wd.any():
        due = np.busday_offset(dates[wd], value[wd].astype(int), roll="forward", holidays=HOLIDAYS)
        keep = np.where(busy[wd], tod[wd], 18 * 3600)
        out[wd] = (due - START).astype(np.int64) * _DAY_S + keep
    wh = unit_hours
    if wh.any():
        d0, s0, b0 = dates[wh], tod[wh], busy[wh]
        in_hours = b0 & (s0 < 18 * 3600)
        start_day = np.where(in_hours, d0, np.busday_offset(d0, np.where(b0, 1, 0), roll="forward",
                                                            holidays=HOLIDAYS))
        start_s = np.where(in_hours, np.maximum(s0, 9 * 3600), 9 * 3600)
        end_s = start_s + (value[wh] * 3600).astype(np.int64)
        over = end_s > 18 * 3600
        nxt = np.busday_offset(start_day, 1, roll="forward", holidays=HOLIDAYS)
        final_day = np.where(over, nxt, start_day)
        final_s = np.where(over, 9 * 3600 + end_s - 18 * 3600, end_s)
        out[wh] = (final_day - START).astype(np.int64) * _DAY_S + final_s
    return out


#: Share of stuck (long-overdue) problems that are never closed; the others are escalated and closed
#: on average :data:`ESCALATION_DAYS` days after their deadline (at least 14).
STUCK_FOR_GOOD = 0.15
ESCALATION_DAYS = 45.0


#: Problems build up at a site between inspections: a visit finds ``ACCUMULATION_FLOOR`` of the site's rate
#: right after the previous one, rising toward ``ACCUMULATION_FLOOR + ACCUMULATION_RISE`` with this time scale
#: (days); a first visit finds the full build-up.
ACCUMULATION_DAYS = 21.0
ACCUMULATION_FLOOR = 0.55
ACCUMULATION_RISE = 0.9


def _accumulation(site: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Hit-rate factor of each inspection from the days since the previous inspection of the same site."""
    order = np.lexsort((t, site))
    gap = np.full(len(t), np.inf)
    s, ts = site[order], t[order]
    same = np.r_[False, s[1:] == s[:-1]]
    gap_sorted = np.where(same, (ts - np.r_[ts[:1], ts[:-1]]) / _DAY_S, np.inf)
    gap[order] = gap_sorted
    return ACCUMULATION_FLOOR + ACCUMULATION_RISE * (1 - np.exp(-gap / ACCUMULATION_DAYS))


def _lifecycle(rng, t, typ, perf, dl_value, dl_hours, late_factor, never_factor):
    """Deadline, rectification, closure, rework count and status of each case (seconds since START)."""
    n = len(t)
    deadline = _deadlines(t, dl_value[typ], dl_hours[typ])
    span = np.maximum(deadline - t, 1800)
    u = rng.random(n)
    p_never = 0.012 * never_factor[typ] * perf
    p_rework = 0.06 * perf
    p_late = np.minimum(0.10 * late_factor[typ] * perf ** 1.5, 0.6)
    stuck = u < p_never
    rework = (~stuck) & (u < p_never + p_rework)
    late = (~stuck) & (~rework) & (u < p_never + p_rework + p_late)
    ontime = ~(stuck | rework | late)
    closed = np.zeros(n, dtype=np.int64)
    f = rng.beta(2.2, 2.0, n)
    closed[ontime] = t[ontime] + (span[ontime] * (0.12 + 0.86 * f[ontime])).astype(np.int64)
    extra = rng.exponential(1.0, n) * np.maximum(span * 0.6, 3 * 3600) + rng.exponential(2 * _DAY_S, n)
    closed[late] = deadline[late] + extra[late].astype(np.int64)
    # A stuck problem is escalated (督办) and closed weeks to months after its deadline; a few stay open for
    # good (老大难). So the backlog of long-overdue problems at the end is small and mostly recent, as in an
    # office that works its overdue list, instead of every stuck problem of two years still open.
    escalated = stuck & (rng.random(n) >= STUCK_FOR_GOOD)
    delay = (14 + rng.exponential(ESCALATION_DAYS - 14, n)) * _DAY_S
    closed[escalated] = deadline[escalated] + delay[escalated].astype(np.int64)
    never = stuck & ~escalated
    reopened = np.zeros(n, dtype=np.int32)
    reopened[rework] = 1 + (rng.random(int(rework.sum())) < 0.2)
    closed[rework] = (t[rework] + span[rework] * rng.uniform(0.6, 1.6, int(rework.sum()))
                      + reopened[rework] * rng.exponential(1.5 * _DAY_S, int(rework.sum()))).astype(np.int64)
    # Rectified before verification: a few hours (quick jobs) to a day before closure.
    gap = np.minimum(rng.uniform(0.1, 0.5, n) * (closed - t), rng.uniform(1800, _DAY_S, n)).astype(np.int64)
    rectified = np.maximum(closed - gap, t + 600)
    closed = np.maximum(closed, rectified + 300)
    end_s = int((END - START).astype(int)) * _DAY_S
    rect_null = never | (rectified >= end_s)
    closed_null = never | (closed >= end_s)
    status_open = closed_null
    return deadline, rectified, rect_null, closed, closed_null, reopened, status_open


# --------------------------------------------------------------------------------------------------
# Putting the city together
# --------------------------------------------------------------------------------------------------


def _build_city(rng):
    """Boundary, roads, micro-grids and the area hierarchy with codes and names (metres and lon/lat)."""
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
    dens = _density(cen[:, 0], cen[:, 1])
    households = np.clip(np.round(rng.lognormal(np.log(170 + 420 * dens / dens.max()), 0.22)), 150, 800)
    grids_ll = shapely.set_precision(_to_lnglat(polys), 1e-7)
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


def _write_areas(con, rng, city):
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
        "leader_name": _person(rng, n), "leader_phone": _mobile(rng, n),
        "households": city["households"].astype(np.int32), "area_km2": area_km2,
        "wkb": pa.array(shapely.to_wkb(g_ll), pa.binary()),
    })
    con.register("_demo_grids", grids)
    con.execute("INSERT INTO grids SELECT code, name, community_code, street_code, district_code, leader_name, "
                "leader_phone, households, area_km2, ST_GeomFromWKB(wkb) FROM _demo_grids")
    con.unregister("_demo_grids")


def _grid_of(polys, xy):
    """Index of the micro-grid containing each point (metres), -1 outside."""
    tree = shapely.STRtree(polys)
    pi, gi = tree.query(shapely.points(xy), predicate="intersects")
    out = np.full(len(xy), -1)
    out[pi[::-1]] = gi[::-1]
    return out


_UNIT_BY_CATEGORY = {
    "05": "示范市公共交通集团有限公司", "06": "示范市公共交通集团有限公司", "07": "示范市交通运输局",
    "08": "示范市交通运输局", "31": "示范市公安局交通警察支队", "11": "示范市园林绿化局", "12": "示范市文化旅游广电局",
}


def _write_sites(con, rng, rows, city, import_id):
    """Insert the sample frame; returns located representative points and per-site attributes."""
    n = len(rows)
    cat = np.array([r["category_code"] for r in rows])
    geoms_m = np.array([r["geom"] for r in rows], dtype=object)
    geoms = _to_lnglat(geoms_m)
    kind = shapely.get_type_id(geoms)
    rep = np.where(kind == 0, geoms, None)
    lines = kind == 1
    rep[lines] = shapely.line_interpolate_point(geoms[lines], 0.5, normalized=True)
    polys = kind == 3
    rep[polys] = shapely.point_on_surface(geoms[polys])
    ll = shapely.get_coordinates(rep)
    located = locate_points(con, ll[:, 0], ll[:, 1])
    # Addresses: district + street + nearest road + house number.
    xm = np.column_stack([(ll[:, 0] - CENTER_LNG) * _M_PER_DEG_LNG, (ll[:, 1] - CENTER_LAT) * _M_PER_DEG_LAT])
    road_geoms = np.array([r["geom"] for r in city["roads"]], dtype=object)
    near = shapely.STRtree(road_geoms).query_nearest(shapely.points(xm), all_matches=False)[1]
    proj = shapely.line_locate_point(road_geoms[near], shapely.points(xm))
    num = 2 * (proj // 30).astype(int) + 1 + rng.integers(0, 2, n)
    area_name = dict(con.execute("SELECT code, name FROM areas").fetchall())
    unit, address = [], []
    for i, r in enumerate(rows):
        c = cat[i]
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
        if c in _UNIT_BY_CATEGORY:
            unit.append(_UNIT_BY_CATEGORY[c])
        elif c in ("09", "10", "28", "29", "30"):
            unit.append(f"{dist}城市管理和综合执法局")
        elif c == "16":
            unit.append(f"{r['name']}管理有限公司")
        elif c == "25":
            unit.append(f"{dist}教育局")
        elif c in ("32", "33", "01", "37", "23") and st:
            unit.append(f"{st}办事处")
        elif c in ("34", "35") and comm:
            unit.append(f"{comm}居民委员会")
        elif c == "36":
            unit.append(f"{r['name']}物业服务中心")
        elif c == "38":
            unit.append(f"{r['builder']}项目部")
        else:
            unit.append(r["name"])
    active = np.array([r.get("active", True) for r in rows])
    loc = location_arrays(located)
    table = pa.table({
        "site_id": np.arange(1, n + 1, dtype=np.int64),
        "external_id": [f"S{i:06d}" for i in range(1, n + 1)],
        "name": [r["name"] for r in rows], "address": address, "category_code": cat.astype(str),
        "responsible_unit": unit, "contact": _person(rng, n), "phone": _phone(rng, n), "active": active,
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


# --------------------------------------------------------------------------------------------------
# The behaviour model: where and when problems arise
# --------------------------------------------------------------------------------------------------


def _site_model(rng, rows, city):
    """Per-site activity windows, heterogeneity, scatter anchors and place names; sets ``active``."""
    n = len(rows)
    K = _K_ANCHORS
    cat = np.array([r["category_code"] for r in rows])
    a = np.zeros(n, dtype=np.int64)
    b = np.full(n, N_DAYS, dtype=np.int64)
    for i, c in enumerate(cat):
        u = rng.random()
        if c == "38":  # construction sites come and go
            if u < 0.25:
                a[i] = rng.integers(90, 600)
            elif u < 0.45:
                b[i] = rng.integers(120, 540)
        elif c in ("13", "14", "15", "19", "20", "26", "27") and u < 0.04:
            b[i] = rng.integers(60, N_DAYS - 60)  # closed business
    for i, r in enumerate(rows):
        r["active"] = bool(b[i] >= N_DAYS - 30)
    het = rng.lognormal(0.0, 0.6, n)
    het[cat == "16"] = rng.lognormal(0.0, 0.9, int((cat == "16").sum()))
    # Bounded: a real city's worst market draws several times the hits of a typical one, not a fifth of all hits.
    het = np.clip(het, 0.25, 3.0)
    anchors = np.zeros((n, K, 2))
    sigma = np.zeros(n)
    places = [r["name"] for r in rows]
    place_idx = np.tile(np.arange(n)[:, None], (1, K))
    for i, r in enumerate(rows):
        g, c = r["geom"], r["category_code"]
        if g.geom_type == "Point":
            anchors[i] = [g.x, g.y]
            sigma[i] = {"05": 10, "07": 10, "14": 12, "31": 30, "09": 12}.get(c, 20)
        elif g.geom_type == "LineString":
            fr = (np.arange(K) + rng.random(K)) / K
            anchors[i] = shapely.get_coordinates(shapely.line_interpolate_point(g, fr, normalized=True))
            sigma[i] = 6 if c == "30" else 10
            if c in ("28", "29"):
                base = r["name"] if c == "28" else city["roads"][r["road"]]["name"]
                for k in range(K):
                    places.append(f"{base}{2 * int(fr[k] * g.length / 30) + 1 + (k % 2)}号附近")
                    place_idx[i, k] = len(places) - 1
        elif c == "25":
            anchors[i] = r["gates"][np.arange(K) % 2] + rng.normal(0, 30, (K, 2))
            sigma[i] = 8
        elif c in ("16", "38"):
            h = K // 2
            anchors[i, :h] = shapely.get_coordinates(
                shapely.line_interpolate_point(g.exterior, rng.random(h), normalized=True))
            anchors[i, h:] = _points_in(g, K - h, rng)
            sigma[i] = 12 if c == "16" else 25
        else:
            anchors[i] = _points_in(g, K, rng)
            sigma[i] = 20
    # Episodes: the sites they happen at.
    episodes = []
    for kind, c, d0, d1, profile, share in EPISODES:
        idx = np.flatnonzero(cat == c)
        if not len(idx):
            continue
        dens = _density(anchors[idx, 0, 0], anchors[idx, 0, 1])
        site = int(idx[np.argsort(-dens)[rng.integers(0, min(3, len(idx)))]])
        episodes.append({"kind": kind, "site": site, "a": int((np.datetime64(d0) - START).astype(int)),
                         "b": int((np.datetime64(d1) - START).astype(int)) + 1, "profile": profile, "share": share})
        if kind == "night_market":
            rows[site]["name_episode"] = f"{rows[site]['name']}夜市"
            places.append(f"{rows[site]['name']}夜市")
            episodes[-1]["place"] = len(places) - 1
    street_of_site = city["street"][np.maximum(_grid_of(city["polys"], anchors[:, 0]), 0)]
    return {"cat": cat, "a": a, "b": b, "het": het, "anchors": anchors, "sigma": sigma, "places": places,
            "place_idx": place_idx, "episodes": episodes, "street": street_of_site}


def _grid_model(rng, city, places):
    """Scatter anchors per micro-grid (for complaints spread by households) and just outside the city."""
    polys = city["polys"]
    K = 64
    anchors = np.stack([_points_in(p, K, rng) for p in polys])
    flat = anchors.reshape(-1, 2)
    road_geoms = np.array([r["geom"] for r in city["roads"]], dtype=object)
    pts = shapely.points(flat)
    near = shapely.STRtree(road_geoms).query_nearest(pts, all_matches=False)[1]
    dist = shapely.distance(road_geoms[near], pts)
    proj = shapely.line_locate_point(road_geoms[near], pts)
    start = len(places)
    for j, (r, p, d) in enumerate(zip(near, proj, dist, strict=True)):
        name = city["roads"][r]["name"]
        places.append(f"{name}{2 * int(p / 30) + 1 + (j % 2)}号" + ("附近" if d > 60 else ""))
    place_idx = start + np.arange(len(flat)).reshape(len(polys), K)
    ring = city["boundary"].buffer(600).difference(city["boundary"].buffer(40))
    out_xy = _points_in(ring, 2000, rng)
    ang = np.degrees(np.arctan2(out_xy[:, 1], out_xy[:, 0])) % 360
    vstart = len(places)
    places.extend(f"{v}村" for v in _VILLAGES)
    out_place = vstart + (ang // (360 / len(_VILLAGES))).astype(int)
    return {"anchors": anchors, "place_idx": place_idx, "out_xy": out_xy, "out_place": out_place}


def _type_matrix(codes, cats, profile_of, factor):
    """Row-normalised problem-type weights per category code."""
    pos = {c: i for i, c in enumerate(codes)}
    m = np.zeros((len(cats), len(codes)))
    for r, c in enumerate(cats):
        for t, w in profile_of(c).items():
            if t in pos:
                m[r, pos[t]] = w * factor.get(t, 1.0)
        if m[r].sum() == 0:
            m[r] = 1.0
    return m / m.sum(1, keepdims=True)


def _choose_by_row(rng, rows, matrix):
    """For each entry of ``rows`` draw a column from ``matrix[row]`` (loop over distinct rows only)."""
    out = np.zeros(len(rows), dtype=np.int16)
    for r in np.unique(rows):
        idx = np.flatnonzero(rows == r)
        out[idx] = rng.choice(matrix.shape[1], len(idx), p=matrix[r])
    return out


def _times_of_day(rng, rows, quarters):
    """Seconds after midnight: a 15-minute bin from ``quarters[row]`` plus a uniform offset."""
    q = _choose_by_row(rng, rows, quarters).astype(np.int64)
    return q * 900 + rng.integers(0, 900, len(rows))


def _scatter(rng, anchors, sigma, who, k=None):
    """Points scattered around anchors[who, k] with per-owner spread ``sigma[who]``."""
    if k is None:
        k = rng.integers(0, anchors.shape[1], len(who))
    xy = anchors[who, k] + rng.normal(0, 1, (len(who), 2)) * sigma[who, None]
    return xy, k


#: Problem types rectified late more often, and left open (overdue) more often.
_LATE_FACTOR = {"0209": 2.2, "0408": 1.6, "0401": 1.4, "0406": 1.6, "0206": 1.3, "0407": 1.3, "0103": 0.7,
                "0104": 0.7, "0105": 0.7}
_NEVER_FACTOR = {"0209": 6.0, "0408": 3.0, "0406": 3.0, "0401": 2.0, "0407": 2.0}
#: Categories whose closed problems rebound more often.
_REBOUND_PRONE = ("16", "30", "25", "38", "37", "29")


def _simulate(rng, n_events, city, sm, gm, types):
    """Inspections, hits, rebounds and complaints as numeric arrays (times in seconds since START)."""
    codes = types["code"].tolist()
    pos = {c: i for i, c in enumerate(codes)}
    prof_of_type = np.array([9 if c == "0802" else 8 if c == "0801" else _PROFILE_OF_MAJOR.get(m, 0)
                             for c, m in zip(codes, types["major_code"], strict=True)])
    dl_value = types["deadline_value"].fillna(1.0).to_numpy(float)
    dl_hours = (types["deadline_unit"] == "working_hours").to_numpy()
    late_f = np.array([_LATE_FACTOR.get(c, 1.0) for c in codes])
    never_f = np.array([_NEVER_FACTOR.get(c, 1.0) for c in codes])
    comp_cdf, insp_cdf, ramp = _daily_profiles()
    cq = _quarter_hours(codes)
    iq = _inspection_quarters()
    cat, a, b, het = sm["cat"], sm["a"], sm["b"], sm["het"]
    n_sites = len(cat)
    cat_codes = sorted(set(cat))
    cat_row = np.searchsorted(cat_codes, cat)
    m_comp = _type_matrix(codes, cat_codes, lambda c: SITE_PROFILES.get(c, DEFAULT_SITE_PROFILE),
                          COMPLAINT_TYPE_FACTOR)
    m_hit = _type_matrix(codes, cat_codes, lambda c: SITE_PROFILES.get(c, DEFAULT_SITE_PROFILE),
                         INSPECTION_TYPE_FACTOR)
    m_bg = _type_matrix(codes, ["bg"], lambda c: BACKGROUND_PROFILE, COMPLAINT_TYPE_FACTOR)
    n_streets = int(city["street"].max()) + 1
    perf_street = rng.lognormal(0.0, 0.3, n_streets)
    perf_street[rng.choice(n_streets, 2, replace=False)] = 1.9  # two lagging (white-flag) streets
    end_s = N_DAYS * _DAY_S

    def lifecycle(t, typ, street):
        perf = np.where(street >= 0, perf_street[np.maximum(street, 0)], 1.0)
        return _lifecycle(rng, t, typ, perf, dl_value, dl_hours, late_f, never_f)

    def episode_types(ep, n):
        prof = {k: v for k, v in ep["profile"].items() if k in pos}
        keys = list(prof)
        w = np.array([prof[k] for k in keys], float)
        return np.array([pos[k] for k in keys], dtype=np.int16)[rng.choice(len(keys), n, p=w / w.sum())]

    # --- inspections and the hits they find ----------------------------------------------------
    hit_target = HIT_SHARE * n_events * 0.955
    n_insp = round(hit_target / 0.8)
    school_site = cat == "25"
    mass = np.where(school_site, insp_cdf[1][b] - insp_cdf[1][a], insp_cdf[0][b] - insp_cdf[0][a])
    vis_w = np.array([SITE_VISIT_WEIGHT.get(c, 1.0) for c in cat]) * np.sqrt(het) * mass
    site_i = rng.choice(n_sites, n_insp, p=vis_w / vis_w.sum())
    u = rng.random(n_insp)
    day_i = np.zeros(n_insp, dtype=np.int64)
    school = school_site[site_i]
    for p in (0, 1):
        m = school == p
        day_i[m] = _sample_days(insp_cdf[p], a[site_i[m]], b[site_i[m]], u[m])
    qrow = np.where(school, 1, np.where(cat[site_i] == "16", 2, 0))
    t_insp = day_i * _DAY_S + _times_of_day(rng, qrow, iq)
    activity = rng.uniform(0.6, 1.4, N_INSPECTORS)
    who = rng.choice(N_INSPECTORS, n_insp, p=activity / activity.sum())
    skill = rng.uniform(0.75, 1.1, N_INSPECTORS)
    skill[rng.choice(N_INSPECTORS, 4, replace=False)] = rng.uniform(1.45, 1.6, 4)
    risk = np.array([SITE_RISK.get(c, 0.35) for c in cat]) * het
    mult = 1 + 0.15 * ramp[day_i]
    for ep in sm["episodes"]:
        m = site_i == ep["site"]
        d = day_i[m]
        if ep["kind"] == "rectified":
            mult[m] *= np.where(d < ep["b"], 5.0, 1 + 4 * np.exp(-(d - ep["b"]) / 30))
        elif ep["kind"] == "night_market":
            mult[m] *= np.where((d >= ep["a"]) & (d < ep["b"]), 4.0, 1.0)
        else:
            mult[m] *= np.where(d >= ep["a"], 1 + 4 * (d - ep["a"]) / max(ep["b"] - ep["a"], 1), 1.0)
    mult *= _accumulation(site_i, t_insp)
    lam = risk[site_i] * skill[who] * mult
    lam *= hit_target / max(lam.sum(), 1e-9)
    found = rng.poisson(lam)
    hit_insp = np.repeat(np.arange(n_insp), found)
    if len(hit_insp) > n_events:
        hit_insp = hit_insp[:n_events]
    n_hits = len(hit_insp)
    hit_site = site_i[hit_insp]
    hit_type = _choose_by_row(rng, cat_row[hit_site], m_hit)
    hit_day = day_i[hit_insp]
    for ep in sm["episodes"]:
        m = (hit_site == ep["site"]) & (hit_day >= ep["a"]) & (hit_day < ep["b"]) & (rng.random(n_hits) < 0.7)
        hit_type[m] = episode_types(ep, int(m.sum()))
    hit_t = t_insp[hit_insp] + rng.integers(60, 1500, n_hits)
    hit_xy, hit_k = _scatter(rng, sm["anchors"], sm["sigma"], hit_site)
    hit_place = sm["place_idx"][hit_site, hit_k]
    hit_life = lifecycle(hit_t, hit_type, sm["street"][hit_site])

    # --- re-checks (回头看): some closed hits recur at the same site --------------------------------
    closed, closed_null = hit_life[3], hit_life[4]
    eligible = ~closed_null & (closed < end_s - 40 * _DAY_S)
    prone = np.isin(cat[hit_site], _REBOUND_PRONE)
    draw = rng.random(n_hits)
    rebound = eligible & (draw < np.where(prone, 0.10, 0.05))
    src = np.flatnonzero(rebound)[: max(n_events - n_hits, 0)]
    n_reb = len(src)
    quiet = np.flatnonzero(eligible & ~rebound & (draw > 0.88))  # re-checks that find nothing

    def recheck_times(base):
        day = (base + rng.uniform(5, 30, len(base)) * _DAY_S).astype(np.int64) // _DAY_S
        dates = np.busday_offset(START + day.astype("timedelta64[D]"), 0, roll="forward", holidays=HOLIDAYS)
        day = np.minimum((dates - START).astype(np.int64), N_DAYS - 1)
        return day * _DAY_S + rng.integers(9 * 3600, 17 * 3600, len(base))

    reb_insp_t = recheck_times(closed[src])
    quiet_t = recheck_times(closed[quiet])
    reb_t = reb_insp_t + rng.integers(60, 1200, n_reb)
    reb_type = hit_type[src]
    reb_site = hit_site[src]
    reb_xy = hit_xy[src] + rng.normal(0, 8, (n_reb, 2))
    reb_place = hit_place[src]
    reb_life = lifecycle(reb_t, reb_type, sm["street"][reb_site])

    # --- complaints (12345) -----------------------------------------------------------------------
    n_comp = n_events - n_hits - n_reb
    n_out = min(round(OUTSIDE_SHARE * n_events), n_comp)
    rest = n_comp - n_out
    n_ep = [round(ep["share"] * rest) for ep in sm["episodes"]]
    n_bg = round(BACKGROUND_SHARE * rest)
    n_site = max(rest - sum(n_ep) - n_bg, 0)
    n_bg = rest - sum(n_ep) - n_site
    parts = []  # (t, typ, xy, place, street)

    def days_by_type(typ, lo, hi):
        u = rng.random(len(typ))
        out = np.zeros(len(typ), dtype=np.int64)
        prof = prof_of_type[typ]
        for p in np.unique(prof):
            m = prof == p
            out[m] = _sample_days(comp_cdf[p], lo[m] if np.ndim(lo) else lo, hi[m] if np.ndim(hi) else hi, u[m])
        return out

    comp_mass = comp_cdf[0][b] - comp_cdf[0][a]
    w = np.array([SITE_COMPLAINT_WEIGHT.get(c, 0.5) for c in cat]) * het * comp_mass
    s = rng.choice(n_sites, n_site, p=w / w.sum())
    typ = _choose_by_row(rng, cat_row[s], m_comp)
    t = days_by_type(typ, a[s], b[s]) * _DAY_S + _times_of_day(rng, typ, cq)
    xy, k = _scatter(rng, sm["anchors"], sm["sigma"], s)
    parts.append((t, typ, xy, sm["place_idx"][s, k], sm["street"][s]))
    for ep, n in zip(sm["episodes"], n_ep, strict=True):
        s = np.full(n, ep["site"])
        typ = episode_types(ep, n)
        if ep["kind"] == "night_market":
            day = days_by_type(typ, ep["a"], ep["b"])
            tod = rng.integers(18 * 3600, 23 * 3600 + 1800, n)
        elif ep["kind"] == "rectified":
            day = days_by_type(typ, 0, ep["b"])
            tail = rng.random(n) < 0.22
            day[tail] = np.minimum(ep["b"] + rng.exponential(25, int(tail.sum())).astype(np.int64), N_DAYS - 1)
            tod = _times_of_day(rng, typ, cq)
        else:
            day = (ep["a"] + (ep["b"] - ep["a"]) * np.sqrt(rng.random(n))).astype(np.int64)
            tod = _times_of_day(rng, typ, cq)
        xy, k = _scatter(rng, sm["anchors"], sm["sigma"], s)
        place = np.full(n, ep.get("place", -1)) if "place" in ep else sm["place_idx"][s, k]
        parts.append((day * _DAY_S + tod, typ, xy, place, sm["street"][s]))
    hh = city["households"].astype(float)
    g = rng.choice(len(hh), n_bg, p=hh / hh.sum())
    typ = _choose_by_row(rng, np.zeros(n_bg, dtype=int), m_bg)
    t = days_by_type(typ, 0, N_DAYS) * _DAY_S + _times_of_day(rng, typ, cq)
    k = rng.integers(0, gm["anchors"].shape[1], n_bg)
    xy = gm["anchors"][g, k] + rng.normal(0, 15, (n_bg, 2))
    parts.append((t, typ, xy, gm["place_idx"][g, k], city["street"][g]))
    j = rng.integers(0, len(gm["out_xy"]), n_out)
    typ = _choose_by_row(rng, np.zeros(n_out, dtype=int), m_bg)
    t = days_by_type(typ, 0, N_DAYS) * _DAY_S + _times_of_day(rng, typ, cq)
    parts.append((t, typ, gm["out_xy"][j] + rng.normal(0, 20, (n_out, 2)), gm["out_place"][j],
                  np.full(n_out, -1)))
    c_t = np.concatenate([p[0] for p in parts]).astype(np.int64)
    c_typ = np.concatenate([p[1] for p in parts]).astype(np.int16)
    c_xy = np.concatenate([p[2] for p in parts])
    c_place = np.concatenate([p[3] for p in parts]).astype(np.int32)
    c_life = lifecycle(c_t, c_typ, np.concatenate([p[4] for p in parts]))

    # --- all events, in time order -------------------------------------------------------------------
    n_all = n_comp + n_hits + n_reb
    ev = {
        "src": np.concatenate([np.zeros(n_comp, np.int8), np.ones(n_hits + n_reb, np.int8)]),
        "t": np.concatenate([c_t, hit_t, reb_t]),
        "typ": np.concatenate([c_typ, hit_type, reb_type]).astype(np.int16),
        "site": np.concatenate([np.full(n_comp, -1), hit_site, reb_site]).astype(np.int64),
        "insp": np.concatenate([np.full(n_comp, -1), hit_insp, n_insp + np.arange(n_reb)]).astype(np.int64),
        "xy": np.concatenate([c_xy, hit_xy, reb_xy]),
        "place": np.concatenate([c_place, hit_place, reb_place]).astype(np.int32),
        "variant": rng.integers(0, 3, n_all).astype(np.int8),
        "prefix": rng.integers(0, len(COMPLAINT_PREFIXES), n_all).astype(np.int8),
        "rebound_src": np.concatenate([np.full(n_comp + n_hits, -1), n_comp + src]).astype(np.int64),
    }
    names = ["deadline", "rectified", "rect_null", "closed", "closed_null", "reopened", "open"]
    for i, name in enumerate(names):
        ev[name] = np.concatenate([c_life[i], hit_life[i], reb_life[i]])
    del parts, c_t, c_typ, c_xy, c_place, c_life, hit_life, reb_life
    for key in ("t", "deadline", "rectified", "closed", "site", "insp", "rebound_src"):
        ev[key] = ev[key].astype(np.int32)  # seconds since START fit in 32 bits; saves memory at 10M
    order = np.argsort(ev["t"], kind="stable")
    for key in ev:
        ev[key] = ev[key][order]
    new_id = np.empty(n_all, dtype=np.int32)
    new_id[order] = np.arange(1, n_all + 1)
    del order
    ev["rebound_of"] = np.where(ev["rebound_src"] >= 0, new_id[np.maximum(ev["rebound_src"], 0)], -1)
    del ev["rebound_src"]
    ev["serial"] = np.zeros(n_all, dtype=np.int32)
    for sv in (0, 1):
        m = np.flatnonzero(ev["src"] == sv)
        ev["serial"][m] = _day_serial(ev["t"][m])

    # --- all inspections, in time order --------------------------------------------------------------
    ins_t = np.concatenate([t_insp, reb_insp_t, quiet_t])
    ins_site = np.concatenate([site_i, reb_site, hit_site[quiet]])
    ins_who = np.concatenate([who, rng.integers(0, N_INSPECTORS, n_reb + len(quiet))])
    n_ins = len(ins_t)
    found_all = np.bincount(ev["insp"][ev["insp"] >= 0], minlength=n_ins)
    iorder = np.argsort(ins_t, kind="stable")
    ins_new = np.empty(n_ins, dtype=np.int64)
    ins_new[iorder] = np.arange(1, n_ins + 1)
    ev["insp"] = np.where(ev["insp"] >= 0, ins_new[np.maximum(ev["insp"], 0)], -1).astype(np.int32)
    ins = {"id": np.arange(1, n_ins + 1, dtype=np.int64), "t": ins_t[iorder], "site": ins_site[iorder],
           "who": ins_who[iorder], "found": found_all[iorder].astype(np.int32)}
    ins["serial"] = _day_serial(ins["t"])
    return ev, ins, {"complaints": n_comp, "hits": n_hits + n_reb, "rebounds": n_reb}


def _day_serial(t):
    """1-based serial number of each (time-sorted) record within its day."""
    day = t // _DAY_S
    first = np.searchsorted(day, day, side="left")
    return (np.arange(len(t)) - first + 1).astype(np.int32)


# --------------------------------------------------------------------------------------------------
# Writing to the store
# --------------------------------------------------------------------------------------------------


def _ts(seconds, null=None):
    arr = START + np.asarray(seconds, dtype=np.int64).astype("timedelta64[s]")
    return pa.array(arr, pa.timestamp("s"), mask=null)


def _write_lookups(con, places, codes, inspectors):
    con.register("_demo_places", pa.table({"id": np.arange(len(places), dtype=np.int32), "name": places}))
    ph = [(i, v, code, PHRASES.get(code, [code] * 3)[v % len(PHRASES.get(code, [code]))])
          for i, code in enumerate(codes) for v in range(3)]
    con.register("_demo_phrases", pa.table({"t": pa.array([p[0] for p in ph], pa.int16()),
                                            "v": pa.array([p[1] for p in ph], pa.int8()),
                                            "code": [p[2] for p in ph], "phrase": [p[3] for p in ph]}))
    con.register("_demo_prefixes", pa.table({"id": pa.array(range(len(COMPLAINT_PREFIXES)), pa.int8()),
                                             "p": COMPLAINT_PREFIXES}))
    con.register("_demo_inspectors", pa.table({"id": np.arange(len(inspectors)), "name": inspectors}))


def _write_inspections(con, ins, import_id, bar):
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


def _write_events(con, ev, import_id, bar):
    n = len(ev["t"])
    for lo in range(0, n, CHUNK):
        hi = min(n, lo + CHUNK)
        sl = slice(lo, hi)
        lng, lat = _xy_to_lnglat(ev["xy"][sl, 0], ev["xy"][sl, 1])
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


def _clear(con):
    """Empty the data layers (the demo replaces whatever the file held)."""
    for table in ("events", "inspections", "sites", "grids", "areas", "imports"):
        con.execute(f"DELETE FROM {table}")
    con.execute("DELETE FROM meta WHERE key LIKE 'demo_%' OR key LIKE 'city_%'")


def build_demo(path: str | os.PathLike, *, events: int = 200_000, seed: int = 0, progress: bool = True) -> dict:
    """Build the demo city (示范市) into a civicgrid database, replacing any data it held.

    The city is generated offline and is the same for the same ``seed`` and
    ``events``: a boundary of about 12 × 10 km near 28.23 N 112.94 E, a street
    network with Chinese names, districts → streets → communities → micro-grids
    nested exactly, a sample frame over all 38 site categories, two years
    (2024–2025) of inspections, and complaints and inspection hits with
    hotspots, weekly and seasonal cycles, campaign surges, rectification
    lifecycles and rebounds.

    Parameters
    ----------
    path
        The database file (created if missing; written atomically).
    events
        Number of events (complaints plus inspection hits); about 40 % are hits.
        Up to 10,000,000 for benchmarks (generated and inserted in chunks).
    seed
        Random seed.
    progress
        Show a progress bar.

    Returns
    -------
    dict
        Counts of what was written (areas, grids, sites, inspections, events, ...) and the seconds taken.
    """
    events = int(events)
    if events < 0:
        msg = f"events must be >= 0, got {events}"
        raise ValueError(msg)
    t0 = _time.perf_counter()
    started = datetime.now()
    rng = np.random.default_rng(seed)
    n_chunks = max(1, -(-events // CHUNK))
    bar = tqdm(total=7 + n_chunks, desc="demo city", unit="step", disable=not progress)
    try:
        with writing(path, memory_limit=DUCKDB_MEMORY) as con:
            _clear(con)
            import_id = 1
            types = con.execute("SELECT code, major_code, deadline_value, deadline_unit FROM problem_types "
                                "ORDER BY code").df()
            city = _build_city(rng)
            bar.update(1)
            _write_areas(con, rng, city)
            bar.update(1)
            rows = _build_frame(rng, city["boundary"], city["roads"], city["areas_m"])
            sm = _site_model(rng, rows, city)
            bar.update(1)
            _write_sites(con, rng, rows, city, import_id)
            gm = _grid_model(rng, city, sm["places"])
            bar.update(1)
            ev, ins, counts = _simulate(rng, events, city, sm, gm, types)
            bar.update(1)
            inspectors = _unique(_person(rng, N_INSPECTORS))
            _write_lookups(con, sm["places"], types["code"].tolist(), inspectors)
            _write_inspections(con, ins, import_id, bar)
            _write_events(con, ev, import_id, bar)
            del ev
            summary = {
                "districts": _count(con, "areas WHERE level = 'district'"),
                "streets": _count(con, "areas WHERE level = 'street'"),
                "communities": _count(con, "areas WHERE level = 'community'"),
                "grids": _count(con, "grids"), "sites": _count(con, "sites"),
                "inspections": _count(con, "inspections"), "events": _count(con, "events"),
                "complaints": int(counts["complaints"]), "hits": int(counts["hits"]),
                "rebounds": int(counts["rebounds"]),
                "outside_grids": _count(con, "events WHERE grid_code IS NULL"),
            }
            total = sum(summary[k] for k in ("districts", "streets", "communities", "grids", "sites",
                                             "inspections", "events"))
            report = {"layer": "demo", "seed": int(seed), "events": events, **summary}
            import json

            con.execute("INSERT INTO imports VALUES (?, 'demo', ?, ?, now()::TIMESTAMP, ?, ?, 0, 0, ?, ?)",
                        [import_id, f"demo:seed={int(seed)},events={events}", started, total, total,
                         summary["outside_grids"], json.dumps(report, ensure_ascii=False)])
            for key, value in (("city_name", CITY_NAME), ("city_name_en", CITY_NAME_EN),
                               ("city_center", f"{CENTER_LNG},{CENTER_LAT}"), ("demo_seed", str(int(seed))),
                               ("demo_events", str(events))):
                con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [key, value])
            backfill(con, actor="demo")  # cases + audit trail from the events
            bar.update(1)
    finally:
        bar.close()
    summary["seconds"] = round(_time.perf_counter() - t0, 1)
    return summary


def _count(con, what: str) -> int:
    return int(con.execute(f"SELECT count(*) FROM {what}").fetchone()[0])
