"""A city's own problem taxonomy: the labels of its files matched to problem types, the labels mapped later, new
types, and the status words of its files.

An events import keeps each row's own label (``events.source_type``) and status (``events.source_status``).
A label that names a problem type (its code, its 小类 or 大类 name in Chinese or English) or that was mapped to
one (``type_labels``: :func:`map_label`, :func:`import_map`) gets that type; any other label is kept without a
type and listed by :func:`unmapped_labels`, with the closest known types as suggestions. Mapping a label later
(:func:`map_label`) gives its events, and their cases, the type and the deadline it implies.
"""

from __future__ import annotations

import csv
import difflib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
from civicgrid.geo.columns import column_key
from civicgrid.geo.errors import ImportFileError, InvalidParameterError, NotFoundError
from civicgrid.geo.events import SOURCES
from civicgrid.geo.readers import read_text
from civicgrid.geo.store import Store, writing
from civicgrid.geo.times import store_now
from civicgrid.sites.cases.calendar import compute_deadlines
from civicgrid.sites.cases.rebounds import kind_sql, link_rebounds

#: Status words of city files (compared lower-case, without spaces at the ends), mapped to the stored status.
STATUS_WORDS = {
    "open": "open", "opened": "open", "pending": "open", "in progress": "open", "assigned": "open", "new": "open",
    "started": "open", "unassigned": "open", "received": "open",
    "未结案": "open", "待处理": "open", "处理中": "open", "办理中": "open", "已派遣": "open", "未办结": "open",
    "待办": "open", "已受理": "open", "受理": "open", "待派遣": "open", "已转办": "open", "退回": "open",
    "closed": "closed", "resolved": "closed", "completed": "closed", "complete": "closed", "done": "closed",
    "已结案": "closed", "已办结": "closed", "办结": "closed", "结案": "closed", "已处理": "closed",
    "已完成": "closed", "完成": "closed", "已关闭": "closed", "已回访": "closed",
}
#: A status with a duplicate mark ("Completed - Dup", "Closed - Duplicate", "已办结（重复）").
_DUPLICATE = re.compile(r"\s*(?:[-–(（]\s*(?:dup|duplicate|重复)\s*[)）]?|\((?:dup|duplicate)\))\s*$", re.IGNORECASE)


def status_words(labels: Iterable[str | None]) -> tuple[list[str], list[bool], list[str]]:
    """The stored status (``open``/``closed``) and duplicate mark of each distinct status label.

    Returns
    -------
    statuses, duplicates, unknown
        Per label: ``open`` or ``closed`` (an unknown or empty label is ``open``) and whether it carries a
        duplicate mark (``Completed - Dup``); and the labels that are not known status words.
    """
    statuses, dups, unknown = [], [], []
    for label in labels:
        text = (label or "").strip()
        base = _DUPLICATE.sub("", text)
        dups.append(base != text)
        word = STATUS_WORDS.get(base.lower())
        if word is None and text:
            unknown.append(text)
        statuses.append(word or "open")
    return statuses, dups, unknown


def _norm(text: object) -> str:
    """A label compared case-, space- and punctuation-insensitively."""
    return "".join(ch for ch in str(text).lower() if ch.isalnum())


def type_choices(con: duckdb.DuckDBPyConnection | Store) -> pd.DataFrame:
    """Problem types and their major classes as one matching table (code, name_zh, name_en)."""
    sql = """
        SELECT code, name_zh, name_en FROM problem_types
        UNION ALL
        SELECT DISTINCT major_code, major_zh, major_en FROM problem_types
    """
    return con.sql(sql) if isinstance(con, Store) else con.execute(sql).df()


def label_map(con: duckdb.DuckDBPyConnection | Store, *, source: str) -> dict[str, str]:
    """The labels mapped to a problem type for imports of ``source`` (normalized label -> code); a mapping for
    this source wins over one for every source."""
    sql = "SELECT source, label, code FROM type_labels WHERE source IS NULL OR source = ? ORDER BY mapped_at"
    rows = con.sql(sql, [source]) if isinstance(con, Store) else con.execute(sql, [source]).df()
    out: dict[str, str] = {}
    for generic in (True, False):  # the source's own mappings last: they win
        for r in rows.itertuples():
            if pd.isna(r.source) == generic:
                out[_norm(r.label)] = r.code
    return out


@dataclass
class TypeMatcher:
    """Matches source labels to problem type codes: a mapped label, a code, a 小类 or 大类 name (zh or en)."""

    lookup: dict[str, str]
    choices: pd.DataFrame

    @classmethod
    def read(cls, con: duckdb.DuckDBPyConnection | Store, *, source: str) -> TypeMatcher:
        """The matcher of imports of ``source`` into the store of ``con``."""
        choices = type_choices(con)
        lookup: dict[str, str] = {}
        for col in ("code", "name_zh", "name_en"):
            for code, name in zip(choices["code"], choices[col], strict=True):
                if isinstance(name, str) and name:
                    lookup.setdefault(_norm(name), code)
        lookup.update(label_map(con, source=source))
        return cls(lookup=lookup, choices=choices)

    def match(self, labels: pa.Array) -> tuple[pa.Array, np.ndarray]:
        """The code of each label (a dictionary array, null when none) and the mask of labels without one.
        ``labels``: strings, or those strings dictionary-encoded already."""
        enc = labels if pa.types.is_dictionary(labels.type) else labels.dictionary_encode()
        uniq = enc.dictionary.to_pylist()
        codes = np.array([self.lookup.get(_norm(v)) for v in uniq] + [None], dtype=object)
        present = ~enc.indices.is_null().to_numpy(zero_copy_only=False)
        idx = np.where(present, enc.indices.fill_null(0).to_numpy(zero_copy_only=False), len(uniq)).astype(np.int64)
        known, slot = pd.factorize(pd.Series(codes[:-1], dtype=object))[::-1]
        slot = np.append(slot, -1).astype(np.int32)[idx]
        out = pa.DictionaryArray.from_arrays(pa.array(slot, pa.int32(), mask=slot < 0),
                                             pa.array(np.asarray(known, dtype=object), pa.string()))
        return out, present & (slot < 0)

    def suggest(self, label: str, *, n: int = 3) -> list[str]:
        """The closest known types of ``label``: ``code name_zh (name_en)``."""
        return suggest_types(label, self.choices, n=n)


#: Words that say nothing of a type (left out of the words a label and a type's English name share).
#: Words no suggestion is made for sharing (San Francisco's "Not_Offensive Graffiti" was offered 0305 "Vehicles not
#: yielding to pedestrians" for its "not").
_STOP_WORDS = frozenset(("a", "an", "and", "at", "for", "in", "of", "on", "or", "the", "to", "with", "other", "not",
                         "no", "non", "by", "from", "is"))


def _words(text: str) -> set[str]:
    """The words of an English text, lower case, a plural's ``s`` dropped (``Vehicles`` is ``vehicle``)."""
    words = re.findall(r"[a-z]+", text.lower())
    return {w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w
            for w in words if w not in _STOP_WORDS}


#: The least character similarity (difflib's ratio) of a suggested type's name to a label: Chinese labels are
#: short, and one shared word of two characters is about 0.5 (垃圾乱堆 and 暴露垃圾); English labels of other
#: meaning still reach 0.5 ("HEAT/HOT WATER" and "dog waste" 0.52), near ones 0.8 ("Illegal Parking" and "illegal
#: car parking" 0.88, "Streetlights" and "street light out" 0.79).
SUGGEST_CUTOFF_CJK = 0.4
SUGGEST_CUTOFF_LATIN = 0.6


def suggest_types(label: str, choices: pd.DataFrame, *, n: int = 3) -> list[str]:
    """The ``n`` problem types whose names are closest to ``label`` (``code 名称 (name)``): first those whose
    English name shares the most of its words with the label (a city's English label: ``Graffiti Public
    Property`` is ``0208 乱涂乱画 (Graffiti)``), then by the similarity of the characters (difflib: Chinese
    labels, typos), from :data:`SUGGEST_CUTOFF_CJK` for a label in Chinese characters and
    :data:`SUGGEST_CUTOFF_LATIN` otherwise. Fewer, or none, when nothing is that close: New York's "Noise -
    Residential" was offered "Piled materials" (0.41) by a cutoff of 0.2."""
    names: dict[str, str] = {}
    for r in choices.itertuples():
        for name in (r.name_zh, r.name_en):
            if isinstance(name, str) and name:
                names.setdefault(name.lower(), r.code)
    said = _words(str(label))
    shared = {name: len(said & words) / len(words) for name in names if (words := _words(name)) and said & words}
    by_words = sorted(shared, key=lambda name: (-shared[name], -difflib.SequenceMatcher(None, str(label).lower(),
                                                                                          name).ratio(), name))
    cutoff = SUGGEST_CUTOFF_CJK if any(ord(ch) >= 0x2E80 for ch in str(label)) else SUGGEST_CUTOFF_LATIN
    close = by_words + difflib.get_close_matches(str(label).lower(), list(names), n=n * 2, cutoff=cutoff)
    out: list[str] = []
    by_code = choices.drop_duplicates("code").set_index("code")
    for name in close:
        code = names[name]
        r = by_code.loc[code]
        text = f"{code} {r['name_zh']}" + (f" ({r['name_en']})" if isinstance(r["name_en"], str) else "")
        if text not in out:
            out.append(text)
    return out[:n]


#: Column names that likely hold a problem type (compared as :func:`civicgrid.geo.columns` does).
LIKELY_TYPE_COLUMNS = ("问题分类", "问题类型", "案件类型", "问题小类", "小类", "大类", "事件类型", "诉求类型",
                       "一级分类", "二级分类", "三级分类", "category", "type", "complaint_type", "request_type",
                       "descriptor", "problem_type")


def type_column_warnings(used: str, columns: list[str], cols: dict[str, str], *, given: bool) -> list[str]:
    """The warnings saying which column the types were read from when it was found by its name (``cols``: the
    import's fields and columns; ``used``: the type columns, comma-separated) and naming likely type columns of
    the file (``columns``) that were not used."""
    out = []
    taken = set(used.split(","))
    likely = {column_key(c) for c in LIKELY_TYPE_COLUMNS}
    others = [c for c in columns if c not in taken and column_key(c) in likely]
    if "type" in cols and not given:
        out.append(f"problem types read from column {cols['type']!r} (found by its name; choose "
                               "another with --type COLUMN, several with --type 一级分类,二级分类)")
    if others:
        out.append(f"column(s) {', '.join(repr(c) for c in others)} may hold problem types and "
                               "were not used (--type COLUMN[,COLUMN...] uses them)")
    return out


# --- managing the taxonomy -----------------------------------------------------------------------------------


def list_types(store: Store) -> pd.DataFrame:
    """Every problem type with its major class, deadline, events and the source labels mapped to it."""
    return store.sql("""
        SELECT p.code, p.major_code, p.major_zh, p.major_en, p.name_zh, p.name_en, p.deadline_value,
               p.deadline_unit, coalesce(e.events, 0) AS events, l.labels
        FROM problem_types p
        LEFT JOIN (SELECT problem_type, count(*) AS events FROM events GROUP BY problem_type) e
               ON e.problem_type = p.code
        LEFT JOIN (SELECT code, string_agg(label, '; ' ORDER BY label) AS labels FROM type_labels GROUP BY code) l
               ON l.code = p.code
        ORDER BY p.code
    """)


def unmapped_labels(store: Store, *, suggestions: int = 3) -> pd.DataFrame:
    """Source labels of events without a problem type, by number of events, with the closest types."""
    df = store.sql("""
        SELECT source, source_type AS label, count(*) AS events FROM events
        WHERE problem_type IS NULL AND source_type IS NOT NULL
        GROUP BY source, source_type ORDER BY events DESC, label
    """)
    choices = type_choices(store)
    df["suggestions"] = [suggest_types(v, choices, n=suggestions) for v in df["label"]]
    return df


def _check_source(source: str | None) -> None:
    if source is not None and source not in SOURCES:
        msg = f"source must be one of {', '.join(SOURCES)} (or none: every source), got {source!r}"
        raise InvalidParameterError(msg)


def _check_code(con: duckdb.DuckDBPyConnection, code: str) -> str:
    choices = type_choices(con)
    code = str(code).strip()
    if code in set(choices["code"]):
        return code
    by_name = {_norm(n): c for col in ("name_zh", "name_en") for c, n in zip(choices["code"], choices[col],
                                                                             strict=True) if isinstance(n, str)}
    if _norm(code) in by_name:
        return by_name[_norm(code)]
    close = suggest_types(code, choices)
    hint = f"; closest: {', '.join(close)}" if close else ""
    msg = f"unknown problem type {code!r} (give a code such as 0101 or its name, or add it: types add){hint}"
    raise NotFoundError(msg)


def map_label(db: str | os.PathLike, label: str, code: str, *, source: str | None = None) -> dict:
    """Map the source label ``label`` to the problem type ``code``, for every later import and retroactively.

    The events of that label (of ``source``, or of every source) that have no type, or the type the label was
    mapped to before, get ``code``; they and their cases get the deadline it implies (from the event's time, on
    the working clock) where they had none.

    Returns
    -------
    dict
        ``label``, ``code``, ``source``, ``events`` (events given the type), ``cases`` (their cases updated) and
        ``rebounds`` (how many of those cases are linked to the earlier closed case they repeat, now that they
        have a type).
    """
    _check_source(source)
    label = str(label).strip()
    if not label:
        msg = "the label to map is empty"
        raise InvalidParameterError(msg)
    with writing(db) as con:
        done = [_map_label(con, label, code, source=source)]
        _relink_rebounds(con, done)
        return done[0]


def _map_label(con: duckdb.DuckDBPyConnection, label: str, code: str, *, source: str | None) -> dict:
    """Map one label in ``con``'s transaction; the events given the type are added to the temp table
    ``_tl_typed`` for :func:`_relink_rebounds` (``rebounds`` is set there)."""
    code = _check_code(con, code)
    before = label_map(con, source=source or "")
    old = before.get(_norm(label))
    con.execute("DELETE FROM type_labels WHERE label = ? AND source IS NOT DISTINCT FROM ?", [label, source])
    con.execute("INSERT INTO type_labels VALUES (?, ?, ?, ?)", [source, label, code, store_now(con)])
    where = "source_type = $label AND ($source IS NULL OR source = $source) AND (problem_type IS NULL" + (
        " OR problem_type = $old)" if old else ")")
    params = {"label": label, "source": source, **({"old": old} if old else {})}
    ev = con.execute(f"SELECT event_id, time FROM events WHERE {where}", params).df()
    if ev.empty:
        return {"label": label, "code": code, "source": source, "events": 0, "cases": 0, "rebounds": 0}
    deadline = compute_deadlines(con, ev["time"].to_numpy("datetime64[s]"), np.full(len(ev), code, dtype=object))
    frame = pd.DataFrame({"event_id": ev["event_id"].to_numpy(np.int64),
                          "deadline": pd.to_datetime(deadline)})
    con.register("_tl_events", frame)
    try:
        con.execute("CREATE OR REPLACE TEMP TABLE _tl AS SELECT * FROM _tl_events")
    finally:
        con.unregister("_tl_events")
    con.execute("""
        UPDATE events SET problem_type = $code,
               deadline = CASE WHEN events.problem_type IS NULL OR events.deadline IS NULL THEN _tl.deadline
                               ELSE events.deadline END
        FROM _tl WHERE events.event_id = _tl.event_id
    """, {"code": code})
    n_cases = con.execute("SELECT count(*) FROM cases WHERE event_id IN (SELECT event_id FROM _tl)").fetchone()[0]
    con.execute("""
        UPDATE cases SET problem_type = $code,
               deadline = CASE WHEN cases.problem_type IS NULL OR cases.deadline IS NULL THEN _tl.deadline
                               ELSE cases.deadline END
        FROM _tl WHERE cases.event_id = _tl.event_id
    """, {"code": code})
    con.execute("CREATE TEMP TABLE IF NOT EXISTS _tl_typed (event_id BIGINT, label VARCHAR, source VARCHAR)")
    con.execute("INSERT INTO _tl_typed SELECT event_id, $label, $source FROM _tl", {"label": label, "source": source})
    con.execute("DROP TABLE IF EXISTS _tl")
    return {"label": label, "code": code, "source": source, "events": len(ev), "cases": int(n_cases),
            "rebounds": 0}


def _relink_rebounds(con: duckdb.DuckDBPyConnection, done: list[dict]) -> None:
    """After the mappings ``done`` gave the cases of ``_tl_typed`` their types: the rebound rule compares kinds
    (:func:`link_rebounds`: types, else the city's labels), so every case of the mapped types is linked again,
    among the type's closures now including the mapped cases (a label linked by itself before now links with
    the type's other cases, and a case of the type may now repeat a later closure of the label), and so is every
    case whose link to or from a mapped case no longer joins two cases of one kind; once for all the mappings.
    Each mapping's ``rebounds`` is then the number of its cases linked to the earlier closed case they repeat."""
    con.execute("CREATE TEMP TABLE IF NOT EXISTS _tl_typed (event_id BIGINT, label VARCHAR, source VARCHAR)")
    codes = sorted({d["code"] for d in done if d["events"]})
    try:
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE _tl_unlink AS
            SELECT c.case_id FROM cases c JOIN cases o ON o.case_id = c.rebound_of
            JOIN events e ON e.event_id = c.event_id JOIN events oe ON oe.event_id = o.event_id
            WHERE (c.event_id IN (SELECT event_id FROM _tl_typed) OR o.event_id IN (SELECT event_id FROM _tl_typed))
              AND {kind_sql("c", "e")} IS DISTINCT FROM {kind_sql("o", "oe")}
            UNION SELECT case_id FROM cases WHERE list_contains($codes, problem_type) AND rebound_of IS NOT NULL
        """, {"codes": codes})
        if con.execute("SELECT count(*) FROM _tl_unlink").fetchone()[0]:
            con.execute("UPDATE cases SET rebound_of = NULL WHERE case_id IN (SELECT case_id FROM _tl_unlink)")
            # a case's id is its event's id
            con.execute("UPDATE events SET rebound_of = NULL WHERE event_id IN (SELECT case_id FROM _tl_unlink)")
        ids = con.execute("SELECT case_id FROM cases WHERE list_contains($codes, problem_type) AND rebound_of IS NULL "
                          "UNION SELECT case_id FROM _tl_unlink", {"codes": codes}).fetchnumpy()["case_id"]
        if len(ids):
            link_rebounds(con, case_ids=ids)
        linked = con.execute("""
            SELECT t.label, t.source, count(*) AS n FROM _tl_typed t JOIN cases c ON c.case_id = t.event_id
            WHERE c.rebound_of IS NOT NULL GROUP BY ALL
        """).fetchall()
        by_label = {(label, source): int(n) for label, source, n in linked}
        for d in done:
            d["rebounds"] = by_label.get((d["label"], d["source"]), 0)
    finally:
        con.execute("DROP TABLE IF EXISTS _tl_unlink")
        con.execute("DROP TABLE IF EXISTS _tl_typed")


#: ``--deadline`` values: a number of working days (``3d``) or working hours (``8h``).
_DEADLINE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([dh])\s*$", re.IGNORECASE)


def parse_deadline(text: str | None) -> tuple[float | None, str | None]:
    """``3d`` -> (3, working_days), ``8h`` -> (8, working_hours), None -> (None, None)."""
    if text is None or not str(text).strip():
        return None, None
    m = _DEADLINE.match(str(text))
    if not m:
        msg = f"deadline must be working days like 3d or working hours like 8h, got {text!r}"
        raise InvalidParameterError(msg)
    return float(m.group(1)), "working_days" if m.group(2).lower() == "d" else "working_hours"


def add_type(db: str | os.PathLike, code: str, name_zh: str, *, name_en: str | None = None,
             major: str | None = None, deadline: str | None = None) -> dict:
    """Add a problem type (a 小类) to the city's taxonomy.

    Parameters
    ----------
    code
        The new code (not yet used by a type or a major class).
    name_zh, name_en
        Its names.
    major
        The code of its major class (大类): an existing one, or a new code (its names then empty). Default: the
        code's first two characters when they name a major class, else ``99``.
    deadline
        Its rectification deadline: ``3d`` (working days) or ``8h`` (working hours); none by default.
    """
    code, name_zh = str(code).strip(), str(name_zh).strip()
    if not code or not name_zh:
        msg = "a new type needs a code and a Chinese name"
        raise InvalidParameterError(msg)
    value, unit = parse_deadline(deadline)
    with writing(db) as con:
        choices = type_choices(con)
        if code in set(choices["code"]):
            msg = f"problem type {code!r} exists already (types list shows them)"
            raise InvalidParameterError(msg)
        majors = con.execute("SELECT DISTINCT major_code, major_zh, major_en FROM problem_types").df()
        if major is None:
            major = code[:2] if code[:2] in set(majors["major_code"]) else "99"
        row = majors[majors["major_code"] == major]
        major_zh = row["major_zh"].iloc[0] if len(row) else ("其他" if major == "99" else None)
        major_en = row["major_en"].iloc[0] if len(row) else ("Other" if major == "99" else None)
        con.execute("INSERT INTO problem_types VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [code, major, major_zh, major_en, name_zh, name_en, value, unit])
    return {"code": code, "major_code": major, "name_zh": name_zh, "name_en": name_en, "deadline_value": value,
            "deadline_unit": unit}


def import_map(db: str | os.PathLike, path: str | os.PathLike) -> list[dict]:
    """Map many labels at once from a CSV ``source,label,code`` (UTF-8, or GBK; ``source`` may be empty: every
    source), retroactively as :func:`map_label`, in one transaction. Every code is checked before anything is
    written."""
    rows = _read_map(path)
    with writing(db) as con:
        bad = []
        for i, r in enumerate(rows, start=2):
            _check_source(r["source"])
            try:
                r["code"] = _check_code(con, r["code"])
            except NotFoundError as exc:
                bad.append(f"line {i}: {exc}")
        if bad:
            msg = "the map has unknown types; nothing was mapped:\n" + "\n".join(bad[:20])
            raise NotFoundError(msg)
        done = [_map_label(con, r["label"], r["code"], source=r["source"]) for r in rows]
        _relink_rebounds(con, done)
        return done


def _read_map(path: str | os.PathLike) -> list[dict]:
    reader = csv.DictReader(read_text(path).splitlines())
    cols = [c.strip().lower() for c in reader.fieldnames or []]
    if "label" not in cols or "code" not in cols:
        msg = f"{path}: a type map is a CSV with columns source,label,code (got {', '.join(cols) or 'no header'})"
        raise ImportFileError(msg)
    out = []
    for r in reader:
        r = {k.strip().lower(): (v or "").strip() for k, v in r.items() if k}
        if r.get("label"):
            out.append({"source": r.get("source") or None, "label": r["label"], "code": r.get("code", "")})
    return out
