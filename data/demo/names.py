"""Names and phone numbers of the demo city's people (grid leaders, contacts, inspectors), and unique names."""

from __future__ import annotations

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


def person_names(rng, n):
    """``n`` random Chinese personal names (surname + given name)."""
    s = rng.choice(SURNAMES, n)
    g = rng.choice(GIVEN_NAMES, n)
    return [a + b for a, b in zip(s, g, strict=True)]


def mobile_numbers(rng, n):
    """``n`` random 11-digit mobile numbers."""
    pre = rng.choice(MOBILE_PREFIXES, n)
    num = rng.integers(0, 100_000_000, n)
    return [f"{p}{k:08d}" for p, k in zip(pre, num, strict=True)]


def phone_numbers(rng, n, landline_share=0.4):
    """``n`` random phone numbers: mobiles, and a share of landlines of the city's area code."""
    mob = mobile_numbers(rng, n)
    land = rng.integers(82_000_000, 89_999_999, n)
    use = rng.random(n) < landline_share
    return [f"{AREA_CODE}-{k}" if u else m for m, k, u in zip(mob, land, use, strict=True)]


def unique_names(names):
    """The names with repeats told apart: the second 桂花小学 becomes 桂花小学（一）, and so on."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        k = seen.get(n, 0)
        seen[n] = k + 1
        out.append(n if k == 0 else f"{n}（{'一二三四五六七八九十'[min(k, 9)]}）" if k < 10 else f"{n}（{k + 1}）")
    return out
