"""geo.texts: one catalogue of the zh/en texts, its lookups, and the rule that no module branches on the language."""

from __future__ import annotations

import doctest
import re
import string
from pathlib import Path

import pandas as pd
import pytest
from civicgrid.geo import texts
from civicgrid.geo.errors import InvalidParameterError
from civicgrid.geo.texts import (
    LANGS,
    TEXTS,
    bilingual,
    check_lang,
    city_name,
    labels,
    local_name,
    local_names,
    name_column,
    pairs,
    parse_lang,
    text,
)

ROOT = Path(__file__).resolve().parents[1]
#: The folders of the installed packages (and their templates).
LAYERS = ("geo", "grids", "maps", "sites", "data", "api", "civicgrid")


def _sources(*suffixes: str) -> list[Path]:
    return [f for layer in LAYERS for f in sorted((ROOT / layer).rglob("*")) if f.suffix in suffixes]


def test_every_entry_has_every_language_and_parses():
    assert LANGS == ("zh", "en") and texts.DEFAULT_LANG == "zh"
    assert len(TEXTS) > 200
    for key, values in TEXTS.items():
        assert len(values) == len(LANGS), key
        assert all(isinstance(v, str) for v in values), key
        for v in values:
            list(string.Formatter().parse(v))  # raises on a malformed field
        assert values[0] or key == "patrol.export.no", f"{key}: empty Chinese text"


def test_text_formats_in_each_language():
    assert text("map.title", city="示范市") == "示范市 问题热点地图"          # Chinese by default
    assert text("map.title", "en", city="Demo City") == "Demo City problem hotspot map"
    assert text("report.rule_text", "en", share=0.25).startswith("the worst 25% of the units")
    assert text("events.note.stale", "zh", as_of=pd.Timestamp("2025-03-01 08:00"), last=pd.Timestamp("2025-01-01"),
                days=59) == "时点 2025-03-01 晚于库中最新的记录（2025-01-01）59 天：结果只反映那时的状况"


def test_unknown_key_and_language():
    with pytest.raises(KeyError, match=r"no text 'map\.nope'"):
        text("map.nope")
    with pytest.raises(KeyError):
        text("map.title")  # a field is missing
    with pytest.raises(InvalidParameterError, match="lang must be zh or en, got 'fr'"):
        text("map.grids", "fr")
    with pytest.raises(InvalidParameterError, match="lang must be zh or en"):
        labels("map", "ZH")
    with pytest.raises(KeyError, match="no table 'nope'"):
        labels("nope")
    assert check_lang("en") == "en"


@pytest.mark.parametrize(("value", "lang"), [("zh", "zh"), ("zh-CN", "zh"), (" ZH_cn ", "zh"), ("cn", "zh"),
                                             ("Chinese", "zh"), ("en", "en"), ("EN-us", "en"), ("English", "en")])
def test_parse_lang(value, lang):
    assert parse_lang(value) == lang


def test_parse_lang_refuses_other_languages():
    with pytest.raises(InvalidParameterError, match="lang must be zh or en, got 'fr'"):
        parse_lang("fr")


def test_tables_of_labels():
    assert labels("level", "zh") == {"district": "区县", "street": "街道", "community": "社区", "grid": "网格",
                                     "category": "点位类别"}
    assert labels("gi", "en")["hot_99"] == "Hot spot, 99% confidence"
    assert list(labels("gi", "en")) == ["hot_99", "hot_95", "hot_90", "none", "cold_90", "cold_95", "cold_99"]
    # a table's own entries only, not its sub-tables'
    assert "export" not in labels("patrol.export", "en") and "walk" not in labels("patrol.export", "en")
    assert labels("patrol.mode", "zh") == {"walk": "步行", "bike": "骑行", "car": "驾车"}
    assert pairs("level")["grid"] == ("网格", "Grid")
    labels("map", "en")["grids"] = "changed"  # a copy: the catalogue is not changed
    assert text("map.grids", "en") == "Micro-grids"


def test_bilingual_with_fields_per_language():
    got = bilingual("patrol.reason.overdue", event=7, type={"zh": "占道经营", "en": "Street vending"}, due="2025-01-02")
    assert got == {"zh": "超期未整改：问题 #7（占道经营）期限 2025-01-02",
                   "en": "overdue: problem #7 (Street vending) due 2025-01-02"}
    assert list(got) == list(LANGS)


def test_names_from_the_data():
    assert name_column("zh") == "name_zh" and name_column("en", "major") == "major_en"
    assert local_name("zh") == "name" and local_name("en") == "coalesce(name_en, name)"
    frame = pd.DataFrame({"name": ["芙蓉区", "天心区"], "name_en": ["Furong", None]})
    assert local_names(frame, "zh").tolist() == ["芙蓉区", "天心区"]
    assert local_names(frame, "en").tolist() == ["Furong", "天心区"]
    with pytest.raises(InvalidParameterError):
        name_column("de")

    class Meta:
        def __init__(self, **values):
            self.values = values

        def meta(self, key):
            return self.values.get(key)

    assert city_name(Meta(city_name="示范市", city_name_en="Demo City"), "en") == "Demo City"
    assert city_name(Meta(city_name="示范市"), "en") == "示范市"
    assert city_name(Meta(city_name="示范市", city_name_en="Demo City"), "zh") == "示范市"
    assert city_name(Meta(), "zh") == ""


def test_module_examples():
    assert doctest.testmod(texts, raise_on_error=True).attempted >= 2


def test_no_inline_language_branches():
    """Labels come from the catalogue: no ``lang == "zh"`` / ``if lang == "en"`` branches in code or templates."""
    branch = re.compile(r"""\blang\s*[!=]=\s*["'](zh|en)["']""")
    hits = [f"{f.relative_to(ROOT)}:{i}: {line.strip()}" for f in _sources(".py", ".html")
            for i, line in enumerate(f.read_text(encoding="utf-8").splitlines(), start=1) if branch.search(line)]
    assert not hits, "\n".join(hits)


def test_keys_used_in_code_exist():
    """Every literal key given to text() / bilingual() and every table given to labels() / pairs() is in the
    catalogue (an f-string key: its table)."""
    tables = {k.rpartition(".")[0] for k in TEXTS}
    call = re.compile(r"""\b(text|bilingual|labels|pairs)\((f?)"([^"]+)\"""")
    missing = []
    for f in _sources(".py"):
        for fn, fstring, key in call.findall(f.read_text(encoding="utf-8")):
            if fstring:
                key = key.split("{", 1)[0].rstrip(".")
                ok = key in tables
            else:
                ok = key in TEXTS if fn in ("text", "bilingual") else key in tables
            if not ok:
                missing.append(f"{f.relative_to(ROOT)}: {fn}({key!r})")
    assert not missing, "\n".join(missing)
