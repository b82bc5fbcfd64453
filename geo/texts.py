"""One catalogue of the Chinese and English texts shown to users, and the lookups every layer uses.

The texts live in ``texts.toml`` beside this module, one entry per label or sentence, ``key = ["中文",
"English"]``, grouped in tables by topic (``[map]``, ``[report]``, ``[patrol.reason]`` …). Code asks for a text
by its full key in a language; Chinese is the default:

>>> text("map.title", "en", city="Demo City")
'Demo City problem hotspot map'
>>> labels("level", "zh")["grid"]
'网格'

* :func:`text` formats one entry (``str.format`` fields); :func:`labels` gives a table's entries in one language
  (page labels handed to a template); :func:`pairs` gives them as ``(zh, en)`` tuples (the public label tables
  such as :data:`civicgrid.geo.hotspots.EMERGING_CLASSES`); :func:`bilingual` formats one entry in every
  language (reasons stored with both, ``{"zh": ..., "en": ...}``).
* :func:`check_lang` is the one check of a ``lang`` argument (:class:`~civicgrid.geo.errors.InvalidParameterError`
  for anything but ``zh`` or ``en``); :func:`parse_lang` reads the forms people type (``zh-CN``, ``EN``).
* Names that come from the data stay in the store and are picked by language, not translated here:
  :func:`name_column` for the taxonomies' ``name_zh`` / ``name_en`` columns (site categories, problem types),
  :func:`local_name` / :func:`local_names` for places (``areas``: Chinese ``name``, optional ``name_en``) and
  :func:`city_name` for the city in the store's metadata.
"""

from __future__ import annotations

import string
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from civicgrid.geo.errors import InvalidParameterError

if TYPE_CHECKING:
    import pandas as pd
    from civicgrid.geo.store import Store

#: The languages, in the order of the catalogue's entries.
LANGS: tuple[str, ...] = ("zh", "en")
#: The language of every ``lang`` argument's default.
DEFAULT_LANG = "zh"
#: The catalogue file.
CATALOGUE_PATH = Path(__file__).with_name("texts.toml")


def _flatten(table: Mapping, prefix: str = "") -> dict[str, tuple[str, ...]]:
    """The catalogue's nested tables as ``{"table.key": (zh, en)}``, in file order; checks every entry."""
    out: dict[str, tuple[str, ...]] = {}
    for name, value in table.items():
        key = f"{prefix}{name}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{key}."))
            continue
        if not (isinstance(value, list) and len(value) == len(LANGS) and all(isinstance(v, str) for v in value)):
            msg = f"{CATALOGUE_PATH.name}: {key} must be a list of {len(LANGS)} texts ({', '.join(LANGS)})"
            raise ValueError(msg)
        try:
            for v in value:
                list(string.Formatter().parse(v))
        except ValueError as exc:
            msg = f"{CATALOGUE_PATH.name}: {key} is not a format string: {exc}"
            raise ValueError(msg) from None
        out[key] = tuple(value)
    return out


def _tables(texts: Mapping[str, tuple[str, ...]]) -> dict[str, dict[str, tuple[str, ...]]]:
    """The entries grouped by table: ``{"map": {"title": (zh, en), ...}, "patrol.reason": {...}}``."""
    out: dict[str, dict[str, tuple[str, ...]]] = {}
    for key, value in texts.items():
        table, _, entry = key.rpartition(".")
        out.setdefault(table, {})[entry] = value
    return out


#: The catalogue: full key -> the text in each of :data:`LANGS` (``("中文", "English")``).
TEXTS: dict[str, tuple[str, ...]] = _flatten(tomllib.loads(CATALOGUE_PATH.read_text(encoding="utf-8")))
_BY_LANG = {lang: {key: texts[i] for key, texts in TEXTS.items()} for i, lang in enumerate(LANGS)}
_TABLES = _tables(TEXTS)


def check_lang(lang: str) -> str:
    """Return ``lang`` if it is a language of the catalogue (``zh`` or ``en``).

    Raises
    ------
    InvalidParameterError
        Any other value.
    """
    if lang not in _BY_LANG:
        msg = f"lang must be {' or '.join(LANGS)}, got {lang!r}"
        raise InvalidParameterError(msg)
    return lang


def parse_lang(value: str) -> str:
    """A language as people write it: ``zh``, ``zh-CN``, ``cn``, ``chinese`` -> ``zh``; ``en``, ``en-US``,
    ``English`` -> ``en`` (any case, spaces ignored).

    Raises
    ------
    InvalidParameterError
        Anything else (the message of :func:`check_lang`).
    """
    key = str(value).strip().lower()
    if key.startswith("zh") or key in ("cn", "chinese"):
        return "zh"
    if key.startswith("en"):
        return "en"
    return check_lang(value)


def text(key: str, lang: str = DEFAULT_LANG, /, **fields: object) -> str:
    """The catalogue's text ``key`` in ``lang``, its ``{fields}`` filled (``str.format``).

    Parameters
    ----------
    key
        Full key, ``"<table>.<entry>"`` (``"map.title"``, ``"patrol.reason.overdue"``).
    lang
        ``zh`` (default) or ``en``.
    **fields
        Values of the text's fields.

    Raises
    ------
    KeyError
        ``key`` is not in the catalogue, or a field is missing.
    InvalidParameterError
        ``lang`` is not a language of the catalogue.
    """
    table = _BY_LANG[check_lang(lang)]
    if key not in table:
        msg = f"no text {key!r} in {CATALOGUE_PATH.name}"
        raise KeyError(msg)
    return table[key].format(**fields)


def labels(prefix: str, lang: str = DEFAULT_LANG) -> dict[str, str]:
    """The entries of the table ``prefix`` in ``lang``, unformatted: ``{entry: text}`` in catalogue order.

    Only the table's own entries, not those of its sub-tables (``labels("patrol.export")`` has no
    ``patrol.export.x.y``). For labels handed to a template or looked up by a code (``labels("gi", "en")``).

    Raises
    ------
    KeyError
        No entry has that prefix.
    InvalidParameterError
        ``lang`` is not a language of the catalogue.
    """
    i = LANGS.index(check_lang(lang))
    return {entry: texts[i] for entry, texts in pairs(prefix).items()}


def pairs(prefix: str) -> dict[str, tuple[str, ...]]:
    """The entries of the table ``prefix`` as ``{entry: (zh, en)}`` (see :func:`labels`)."""
    if prefix not in _TABLES:
        msg = f"no table {prefix!r} in {CATALOGUE_PATH.name}"
        raise KeyError(msg)
    return dict(_TABLES[prefix])


def bilingual(key: str, /, **fields: object) -> dict[str, str]:
    """The text ``key`` in every language, ``{"zh": ..., "en": ...}``: for records that keep both.

    A field given as a mapping by language (``type={"zh": "占道经营", "en": "Street vending"}``) is filled
    with its value for each language; other fields are the same in all.
    """
    def pick(value: object, lang: str) -> object:
        return value[lang] if isinstance(value, Mapping) else value

    return {lang: text(key, lang, **{f: pick(v, lang) for f, v in fields.items()}) for lang in LANGS}


# --- names from the data ---------------------------------------------------------------------------------


def name_column(lang: str, base: str = "name") -> str:
    """The column holding ``base`` in ``lang`` in a table that keeps both, ``<base>_zh`` / ``<base>_en``:
    ``name_zh``, ``major_en``, ``group_zh`` (``site_categories``, ``problem_types``), ``label_en``."""
    return f"{base}_{check_lang(lang)}"


def local_name(lang: str, column: str = "name") -> str:
    """SQL for a place's name in ``lang`` (``areas``, where ``name`` is Chinese and ``name_en`` optional):
    ``name``, or ``coalesce(name_en, name)`` (the Chinese name when there is no English one)."""
    return column if check_lang(lang) == DEFAULT_LANG else f"coalesce({column}_{lang}, {column})"


def local_names(frame: pd.DataFrame, lang: str, column: str = "name") -> pd.Series:
    """:func:`local_name` on a data frame with the columns ``name`` and ``name_en``."""
    return frame[column] if check_lang(lang) == DEFAULT_LANG else frame[f"{column}_{lang}"].fillna(frame[column])


def city_name(store: Store, lang: str) -> str:
    """The city's name in ``lang`` from the store's metadata (``city_name``, ``city_name_en``); ``""`` if unset."""
    key = "city_name" if check_lang(lang) == DEFAULT_LANG else f"city_name_{lang}"
    return store.meta(key) or store.meta("city_name") or ""


__all__ = [
    "CATALOGUE_PATH",
    "DEFAULT_LANG",
    "LANGS",
    "TEXTS",
    "bilingual",
    "check_lang",
    "city_name",
    "labels",
    "local_name",
    "local_names",
    "name_column",
    "pairs",
    "parse_lang",
    "text",
]
