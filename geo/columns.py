"""The columns of an input file: which column holds each field, and its cells as clean text or numbers.

Every import names its fields (``id``, ``lat``, ``time``, ``type``…); :func:`resolve_columns` finds their
columns from ``--map``/flag values and the recognised names of :data:`FIELD_ALIASES`. The cells are then
read once, trimmed (:func:`trimmed`, :func:`strings`), parsed as numbers (:func:`numbers`) or matched to the
codes of a reference table by code or name (:func:`match_names`).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from civicgrid.geo.errors import ImportFileError

#: Column names recognised without a flag, per field (compared case-insensitively,
#: ignoring spaces, dots and underscores). A flag always wins over these.
FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "id": ("id", "external_id", "编号", "案件编号", "工单编号", "事件编号", "caseid", "unique_key", "objectid"),
    "lat": ("lat", "latitude", "纬度", "wgs84纬度", "y坐标"),
    "lng": ("lng", "lon", "long", "longitude", "经度", "wgs84经度", "x坐标"),
    "time": ("time", "datetime", "时间", "发现时间", "受理时间", "上报时间", "检查时间", "created_date", "opened"),
    "type": ("problem_type", "问题小类", "小类", "问题分类", "问题类型", "案件类型", "事件类型", "诉求类型", "事件小类",
             "三级分类", "二级分类", "一级分类", "事件大类", "问题大类", "大类", "complaint_type", "request_type",
             "type", "category"),
    "name": ("name", "名称", "点位名称", "区域名称", "网格名称", "site_name"),
    "code": ("code", "编码", "代码", "区域编码", "网格编码"),
    "category": ("category", "类别", "点位类别", "点位类型"),
    "parent": ("parent", "parent_code", "上级编码", "所属社区编码"),
    "site": ("site", "site_id", "点位编号", "点位"),
    "result": ("result", "结果", "检查结果"),
    "text": ("text", "description", "描述", "内容", "问题描述", "诉求内容"),
    "address": ("address", "地址", "详细地址", "点位地址", "诉求地址", "事发地址", "问题地址", "事件地址", "发生地址",
                "incident_address"),
    "area": ("area", "所属网格", "所属社区", "所属街道", "所属区县", "网格", "社区", "街道"),
    "unit": ("responsible_unit", "unit", "责任单位"),
    "contact": ("contact", "联系人", "责任人"),
    "phone": ("phone", "电话", "联系电话", "手机"),
    "inspector": ("inspector", "检查人", "督查员", "巡查员"),
    "status": ("status", "状态", "办理状态"),
    "rectified": ("rectified_at", "整改时间", "整改完成时间", "处置完成时间"),
    "closed": ("closed_at", "结案时间", "办结时间"),
    "leader": ("leader", "leader_name", "网格长"),
    "leader_phone": ("leader_phone", "网格长电话"),
    "households": ("households", "户数"),
    "active": ("active", "是否有效"),
    "inspection": ("inspection", "inspection_id", "检查编号"),
}


#: Column names recognised for areas (district, street, community): also the administrative division code and name
#: of Chinese boundary files (Amap's ``adcode``, 行政区划代码). Not for micro-grids or sites, where such a column is
#: the code of the area they lie in.
AREA_ALIASES: dict[str, tuple[str, ...]] = {
    **FIELD_ALIASES,
    "code": (*FIELD_ALIASES["code"], "区划代码", "行政区划代码", "adcode"),
    "name": (*FIELD_ALIASES["name"], "区划名称", "行政区划名称"),
}


#: Names of a column holding both coordinates as one text, "(lat, lon)" or "lat,lon" (compared as
#: :func:`column_key` does): taken when a file has no latitude and longitude columns and no geometry.
POINT_ALIASES: tuple[str, ...] = ("point", "coordinates", "coordinate", "latlng", "latlon", "latitudelongitude",
                                  "坐标", "经纬度", "经纬度坐标", "位置坐标", "gps坐标")


def point_column(names: Sequence[str]) -> str | None:
    """The column of ``names`` holding a point as text, found by its name (:data:`POINT_ALIASES`), or None."""
    by_key = {column_key(c): c for c in names}
    return next((by_key[k] for k in map(column_key, POINT_ALIASES) if k in by_key), None)


def column_key(name: str) -> str:
    """A column name as names are compared: lower case, without spaces, dots, dashes and underscores."""
    return "".join(ch for ch in str(name).lower() if ch not in " ._-")


def resolve_columns(table: pa.Table, mapping: dict[str, str], *, fields: list[str],
                    required: Sequence[str] = (),
                    aliases: dict[str, tuple[str, ...]] = FIELD_ALIASES) -> dict[str, str]:
    """Return ``{field: column}`` from explicit flags and recognised column names (``aliases``: per field, the
    names recognised without a flag).

    Raises
    ------
    ImportFileError
        A flag names a column that is not in the file, or a required field has no column.
    """
    names = [c for c in table.column_names if c not in ("geometry", "__row__")]
    by_norm = {column_key(c): c for c in names}
    out: dict[str, str] = {}
    for key, col in mapping.items():
        if col is None:
            continue
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            msg = f"unknown field {key!r} in --map {key}={col}: {hint}This import's fields are: {', '.join(fields)}"
            raise ImportFileError(msg)
        if col not in names:
            close = difflib.get_close_matches(col, names, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else "."
            msg = f"column {col!r} (given for {key}) is not in the file{hint} Columns are: {', '.join(names)}"
            raise ImportFileError(msg)
        out[key] = col
    taken = set(out.values())
    for key in fields:
        if key in out:
            continue
        for alias in aliases.get(key, (key,)):
            found = by_norm.get(column_key(alias))
            if found is not None and found not in taken:
                out[key] = found
                taken.add(found)
                break
    missing = [k for k in required if k not in out]
    if missing:
        flags = ", ".join(f"--{k}" if k in _FLAG_FIELDS else f"--map {k}=COLUMN" for k in missing)
        msg = f"no column for {', '.join(missing)}: name it with {flags}. Columns are: {', '.join(names)}"
        raise ImportFileError(msg)
    return out


_FLAG_FIELDS = {"id", "lat", "lng", "time", "type", "name", "code", "category", "parent", "site", "result", "text"}


#: Field metadata marking a column :func:`trim_columns` already trimmed.
_TRIMMED = {b"civicgrid": b"trimmed"}


def trim_columns(table: pa.Table, columns) -> pa.Table:
    """Return ``table`` with ``columns`` trimmed once (empty cells null); :func:`trimmed` then reads them as is."""
    for name in dict.fromkeys(c for c in columns if c is not None and c in table.column_names):
        i = table.column_names.index(name)
        table = table.set_column(i, pa.field(name, pa.string(), metadata=_TRIMMED), trimmed(table, name))
    return table


def trimmed(table: pa.Table, column: str) -> pa.Array:
    """A column as one Arrow string array, trimmed, with nulls for empty cells."""
    arr = table.column(column)
    if isinstance(arr, pa.ChunkedArray):  # one chunk (a column trim_columns set): itself, not a copy of it
        arr = arr.chunk(0) if arr.num_chunks == 1 else arr.combine_chunks()
    if table.schema.field(column).metadata == _TRIMMED:
        return arr
    if not pa.types.is_string(arr.type):
        arr = arr.cast(pa.string())
    arr = pc.utf8_trim_whitespace(arr)
    if not pc.any(pc.equal(pc.binary_length(arr), 0)).as_py():  # usually none: no copy
        return arr
    return pc.if_else(pc.equal(arr, ""), pa.scalar(None, pa.string()), arr)


def strings(table: pa.Table, column: str | None) -> np.ndarray:
    """Return a column as an object array of stripped strings (None for empty)."""
    if column is None:
        return np.full(table.num_rows, None, dtype=object)
    return trimmed(table, column).to_numpy(zero_copy_only=False)


#: A decimal number as city files write it (optional sign, decimals, exponent).
_NUMBER = r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$"


def numbers(values, *, trimmed: bool = False) -> np.ndarray:
    """Parse strings to floats (NaN where empty or not a number).

    ``values`` is an object array of strings or an Arrow string array
    (``trimmed``: already without surrounding spaces).
    """
    arr = values if isinstance(values, pa.Array) else pa.array(np.asarray(values, dtype=object), pa.string(),
                                                                from_pandas=True)
    if not trimmed:
        arr = pc.utf8_trim_whitespace(arr)
    try:  # the usual case, every value a plain number: one strict cast
        num = pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False).astype("float64")
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        num = None
    if num is not None and np.isfinite(num[~np.isnan(num)]).all() and \
            np.isnan(num).sum() == arr.null_count:  # "nan"/"inf" text is not a number: the checked path says so
        return num
    good = pc.match_substring_regex(arr, _NUMBER)
    num = pc.cast(pc.if_else(good, arr, pa.scalar(None, pa.string())), pa.float64())
    return num.to_numpy(zero_copy_only=False).astype("float64")


def match_names(values: np.ndarray, choices: pd.DataFrame, *, key: str, names: list[str],
                what: str, arrow: bool = False) -> tuple[np.ndarray | pa.DictionaryArray, np.ndarray, np.ndarray]:
    """Match free-text values to codes of a reference table by code or any name column.

    With ``arrow=True`` the codes come as an Arrow dictionary array (no Python
    string per row).

    Returns
    -------
    codes, unknown, reasons
        The matched codes (None if unknown or empty), a mask of non-empty
        values that matched nothing, and a reason per row naming the closest
        known names.
    """
    lookup: dict[str, str] = {}
    for col in [key, *names]:
        for code, name in zip(choices[key], choices[col], strict=True):
            if isinstance(name, str) and name:
                lookup.setdefault(column_key(name), code)
    arr = values if isinstance(values, pa.Array) else pa.array(np.asarray(values, dtype=object), pa.string(),
                                                                from_pandas=True)
    enc = arr.dictionary_encode()  # each distinct value is matched once
    uniq = enc.dictionary.to_pylist()
    present = ~enc.indices.is_null().to_numpy(zero_copy_only=False)
    idx = np.where(present, enc.indices.fill_null(0).to_numpy(zero_copy_only=False), 0).astype(np.int64)
    mapped = np.array([lookup.get(column_key(v)) for v in uniq] + [None], dtype=object)
    if arrow:
        known, slot = pd.factorize(pd.Series(mapped[:-1], dtype=object))[::-1]
        slot = np.append(slot, -1).astype(np.int32)[np.where(present, idx, len(uniq))]
        codes = pa.DictionaryArray.from_arrays(pa.array(slot, pa.int32(), mask=slot < 0),
                                               pa.array(np.asarray(known, dtype=object), pa.string()))
        unknown = present & (slot < 0)
    else:
        codes = np.where(present, mapped[np.where(present, idx, len(uniq))], None  # type: ignore[call-overload]
                         ).astype(object)
        unknown = present & pd.isna(codes)
    reasons = np.full(len(arr), None, dtype=object)
    if unknown.any():
        candidates = [str(n) for col in names for n in choices[col] if isinstance(n, str)]
        why = np.full(len(uniq), None, dtype=object)
        for k in np.unique(idx[unknown]):
            v = uniq[k]
            close = difflib.get_close_matches(str(v), candidates, n=3, cutoff=0.3)
            hint = f" (closest: {', '.join(close)})" if close else ""
            why[k] = f"unknown {what} {v!r}{hint}"
        reasons[unknown] = why[idx[unknown]]
    return codes, unknown, reasons
