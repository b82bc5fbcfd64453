"""Inspection visits to sample-frame sites: import.

What a city's records call the result of a visit varies; the importer reads the common kinds:

* a **conformity word**: 符合/不符合, 合格/不合格, pass/fail, conforming/nonconforming, ... (:data:`RESULT_WORDS`);
* a **count** of problems found (0 is conforming);
* a **score** with a pass threshold: ``--result SCORE_COLUMN --fail-when "score>=14"`` (NYC points, higher is
  worse); the score is stored in ``inspections.score``;
* a **severity** (none / minor / significant / critical-crucial, 无 / 轻微 / 一般 / 严重; :data:`SEVERITY_WORDS`), which
  needs ``--fail-when "result>=significant"`` to say which severities fail (a severity alone is refused, not
  guessed).

``--fail-when "SUBJECT OP VALUE"`` decides conformity: ``SUBJECT`` is ``result``, ``score``, ``critical`` or any
column of the file; ``OP`` one of ``>= > <= < = !=``; ``VALUE`` a number, a severity word, or (for ``=`` and
``!=``) words separated by ``|`` (``"status=Conditional Pass|Closed"``). When the subject is the result column
itself, the result is read as a score or severity rather than as a count. A visit whose subject is empty is kept
unlabelled (``conforming`` NULL); a value that cannot be compared is rejected with its row.

More fields: ``--map critical=COLUMN`` (a flag, a count of critical findings, or a severity: critical when the
severity is the top level) is stored in ``inspections.critical``; ``--map score=COLUMN`` in ``inspections.score``;
``--map kind=COLUMN`` (routine, re-inspection, follow-up, 复查...) in ``inspections.kind``.
"""

from __future__ import annotations

import operator
import os
import re
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
from civicgrid.geo import importing as imp
from civicgrid.geo.columns import match_names, strings
from civicgrid.geo.errors import InvalidParameterError
from civicgrid.geo.import_report import ImportReport
from civicgrid.geo.locations import read_locations
from civicgrid.geo.store import writing
from civicgrid.geo.times import (
    outside_window,
    parse_times,
    store_timezone,
    window_text,
    zone_note,
)
from civicgrid.sites.frame import PointRows

INSPECTION_FIELDS = ["id", "lat", "lng", "site", "time", "inspector", "result", "score", "critical", "kind"]

#: Result words, read as conforming (True) or not (False); a number is the count of problems found.
RESULT_WORDS = {
    "符合": True, "合格": True, "达标": True, "conforming": True, "pass": True, "passed": True, "ok": True,
    "yes": True, "是": True, "无问题": True, "通过": True,
    "不符合": False, "不合格": False, "不达标": False, "nonconforming": False, "non-conforming": False,
    "fail": False, "failed": False, "no": False, "否": False, "有问题": False, "不通过": False,
}

#: Severity words and their level (0 none .. 3 critical); ``C - Crucial`` style codes are read by their word.
SEVERITY_WORDS = {
    "none": 0, "no violation": 0, "无": 0, "na": 0, "not applicable": 0,
    "minor": 1, "low": 1, "轻微": 1, "m": 1,
    "significant": 2, "major": 2, "moderate": 2, "medium": 2, "一般": 2, "较重": 2, "s": 2,
    "critical": 3, "crucial": 3, "severe": 3, "high": 3, "严重": 3, "重大": 3, "c": 3,
}

#: Flag words of ``--map critical=COLUMN``.
FLAG_WORDS = {"true": True, "t": True, "yes": True, "y": True, "是": True, "有": True,
              "false": False, "f": False, "no": False, "n": False, "否": False, "无": False}

_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "=": operator.eq,
        "==": operator.eq, "!=": operator.ne}
_RULE = re.compile(r"^\s*(.+?)\s*(>=|<=|==|!=|=|>|<)\s*(.+?)\s*$")


def _severity(values: pd.Series) -> pd.Series:
    """Severity level (0..3) of words such as ``Crucial``, ``C - Crucial``, 严重 (NaN: not a severity word)."""
    s = values.astype(object).where(values.notna(), None)
    low = s.str.strip().str.lower()
    level = low.map(SEVERITY_WORDS)
    coded = low.str.extract(r"^\s*[a-z]+\s*-\s*(.+)$")[0].str.strip().map(SEVERITY_WORDS)  # "C - Crucial"
    return level.fillna(coded).astype(float)


@dataclass(frozen=True)
class FailRule:
    """``--fail-when SUBJECT OP VALUE``: which visits did not conform."""

    subject: str
    op: str
    value: str

    def __str__(self) -> str:
        return f"{self.subject}{self.op}{self.value}"

    def failed(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(failed, labelled, unreadable mask, numeric value) for the subject's texts ``raw``."""
        s = pd.Series(raw, dtype=object)
        present = s.notna().to_numpy()
        fn = _OPS[self.op]
        number = pd.to_numeric(s, errors="coerce").to_numpy(float)
        target = pd.to_numeric(pd.Series([self.value]), errors="coerce").iloc[0]
        if pd.notna(target):
            ok = present & np.isfinite(number)
            failed = np.zeros(len(s), bool)
            failed[ok] = fn(number[ok], float(target))
            return failed, ok, present & ~ok, number
        level = SEVERITY_WORDS.get(self.value.strip().lower())
        if level is not None and self.op not in ("=", "==", "!="):
            sev = _severity(s).to_numpy(float)
            ok = present & np.isfinite(sev)
            failed = np.zeros(len(s), bool)
            failed[ok] = fn(sev[ok], float(level))
            return failed, ok, present & ~ok, sev
        if self.op not in ("=", "==", "!="):
            msg = (f"--fail-when {self}: {self.value!r} is neither a number nor a severity "
                   f"({', '.join(sorted({k for k in SEVERITY_WORDS if len(k) > 2 and k.isascii()}))}); words "
                   "compare with = or != (e.g. \"status=Conditional Pass|Closed\")")
            raise InvalidParameterError(msg)
        words = {w.strip().lower() for w in self.value.split("|") if w.strip()}
        hit = s.str.strip().str.lower().isin(words).to_numpy()
        failed = hit if self.op != "!=" else ~hit
        return failed & present, present, np.zeros(len(s), bool), number


def parse_fail_when(rule: str | None) -> FailRule | None:
    """Read ``--fail-when`` (``score>=14``, ``result>=significant``, ``status=Conditional Pass|Closed``)."""
    if rule is None or not str(rule).strip():
        return None
    m = _RULE.match(str(rule))
    if not m:
        msg = (f"--fail-when {rule!r}: write SUBJECT OP VALUE, e.g. \"score>=14\", \"result>=significant\" or "
               "\"status=Conditional Pass|Closed\" (OP: >= > <= < = !=)")
        raise InvalidParameterError(msg)
    return FailRule(m.group(1).strip(), m.group(2), m.group(3).strip())


def parse_results(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (conforming, problems_found, unknown mask) from result texts or problem counts.

    A severity word is *unknown* here: which severities fail must be said with ``--fail-when``.
    """
    s = pd.Series(values, dtype=object)
    count = pd.to_numeric(s, errors="coerce")
    word = s.str.strip().str.lower().map(RESULT_WORDS)
    conforming = np.where(count.notna(), count == 0, word).astype(object)
    conforming[pd.isna(word).to_numpy() & count.isna().to_numpy()] = None
    problems = count.where(count.notna(), np.where(word.eq(True), 0, np.nan))
    bad_count = count.notna() & ((count < 0) | (count != count.round()))
    unknown = (s.notna() & count.isna() & word.isna()) | bad_count
    return conforming, problems.to_numpy(dtype="float64"), unknown.to_numpy()


def parse_flags(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(critical flag as object array of bool/None, unreadable mask) of ``--map critical`` texts: a flag word,
    a count (> 0: critical) or a severity (the top level: critical)."""
    s = pd.Series(values, dtype=object)
    low = s.str.strip().str.lower()
    flag = low.map(FLAG_WORDS)
    count = pd.to_numeric(s, errors="coerce")
    sev = _severity(s)
    out = flag.where(flag.notna(), (count > 0).where(count.notna()))
    out = out.where(out.notna(), (sev >= 3).where(sev.notna()))
    unknown = (s.notna() & out.isna()).to_numpy()
    res = np.full(len(s), None, dtype=object)
    known = out.notna().to_numpy()
    res[known] = out[known].astype(bool).to_numpy()
    return res, unknown


def _column(table: pa.Table, cols: dict[str, str], name: str) -> str | None:
    """The file column ``--fail-when`` names: a mapped field, else a column of the file (exact, then any case)."""
    if name in cols:
        return cols[name]
    names = [c for c in table.column_names if c not in ("geometry", "__row__")]
    if name in names:
        return name
    low = {c.lower(): c for c in names}
    if name.lower() in low:
        return low[name.lower()]
    msg = f"--fail-when names {name!r}, which is neither result, score, critical nor a column; columns: " + \
        ", ".join(names)
    raise InvalidParameterError(msg)


def _why(mask: np.ndarray, raw: np.ndarray, fmt: str) -> np.ndarray:
    why = np.full(len(mask), None, dtype=object)
    why[mask] = [fmt.format(v=v) for v in raw[mask]]
    return why


def import_inspections(path: str | os.PathLike, *, db: str | os.PathLike, mapping: dict[str, str] | None = None,
                       point: str | None = None, crs: str | None = None, tz: str | None = None,
                       encoding: str | None = None, layer: str | None = None, sheet: str | int | None = None,
                       fail_when: str | None = None, progress: bool = True) -> ImportReport:
    """Import inspection visits: site, time, inspector and result.

    The site is matched by its external id or exact name; a visit without
    coordinates takes its site's location (a site without coordinates: none).
    The result is a conformity word (符合/不符合, pass/fail), the number of
    problems found, or a score or severity with ``fail_when`` (see the module).

    Parameters
    ----------
    mapping
        ``{field: column}`` for ``id, site, time, inspector, result, score, critical, kind, lat, lng``.
    fail_when
        ``"SUBJECT OP VALUE"``, e.g. ``"score>=14"``: the visits that did not conform.
    """
    started = datetime.now().astimezone()  # a moment; record_import stores it on the store's clock
    rule = parse_fail_when(fail_when)
    src, cols, report, rej = imp.start_import("inspections", path, fields=INSPECTION_FIELDS,
                                              required=["site", "time"], mapping=mapping, encoding=encoding,
                                              layer=layer, sheet=sheet)
    table = src.table
    n = table.num_rows
    subject_col = None
    if rule is not None:
        subject_col = _column(table, cols, rule.subject)
        report.columns["fail_when"] = str(rule)
    with writing(db) as con:
        store_tz = store_timezone(con)
        report.warnings += filter(None, [zone_note(tz, store_tz)])
        sites = con.execute(
            "SELECT CAST(site_id AS VARCHAR) AS code, external_id, name, lng, lat FROM sites").df()
        raw_site = strings(table, cols["site"])
        site_code, unknown, reasons = match_names(raw_site, sites, key="code", names=["external_id", "name"],
                                                  what="site")
        rej.add(pd.isna(raw_site), "site", "missing site")
        rej.add(unknown, "site", reasons)
        raw_time = strings(table, cols["time"])
        times, bad_time = parse_times(raw_time, tz=tz or store_tz, store_tz=store_tz)
        rej.add(pd.isna(raw_time), "time", "missing time")
        if bad_time.any():
            rej.add(bad_time, "time", _why(bad_time, raw_time, "unparseable time {v!r}"))
        implausible = outside_window(times, tz=store_tz)
        if implausible.any():
            why = np.full(n, None, dtype=object)
            why[implausible] = [f"outside the plausible window {window_text(tz=store_tz)}: {v!r}"
                                for v in raw_time[implausible]]
            rej.add(implausible, "time", why)
        conforming = np.full(n, None, dtype=object)
        problems = np.full(n, np.nan)
        score = np.full(n, np.nan)
        result_is_subject = rule is not None and "result" in cols and subject_col == cols["result"]
        if "result" in cols and not result_is_subject:
            raw = strings(table, cols["result"])
            conforming, problems, unknown = parse_results(raw)
            if unknown.any():
                sev = np.isfinite(_severity(pd.Series(raw, dtype=object)).to_numpy(float))
                why = np.full(n, None, dtype=object)
                why[unknown & sev] = [f"result {v!r} is a severity: say which severities fail with --fail-when "
                                      "\"result>=significant\" (or critical)" for v in raw[unknown & sev]]
                why[unknown & ~sev] = [f"unknown result {v!r} (use 符合/不符合, pass/fail, a number of problems, "
                                       "or a score or severity with --fail-when)" for v in raw[unknown & ~sev]]
                rej.add(unknown, "result", why)
        if rule is not None:
            raw = strings(table, subject_col)
            failed, labelled, unreadable, value = rule.failed(raw)
            rej.add(unreadable, rule.subject, _why(unreadable, raw, f"--fail-when {rule}: cannot compare {{v!r}}"))
            conforming = np.full(n, None, dtype=object)
            conforming[labelled] = ~failed[labelled]
            if result_is_subject or rule.subject == "score":
                score = np.where(np.isfinite(value) & (pd.to_numeric(pd.Series(raw, dtype=object),
                                                                     errors="coerce").notna().to_numpy()),
                                 value, np.nan)
        if "score" in cols:
            raw = strings(table, cols["score"])
            score = pd.to_numeric(pd.Series(raw, dtype=object), errors="coerce").to_numpy(float)
            bad = pd.notna(raw) & ~np.isfinite(score)
            rej.add(bad, "score", _why(bad, raw, "non-numeric score {v!r}"))
        critical = np.full(n, None, dtype=object)
        if "critical" in cols:
            raw = strings(table, cols["critical"])
            critical, bad = parse_flags(raw)
            rej.add(bad, "critical", _why(bad, raw, "unknown critical flag {v!r} (use true/false, 是/否, a count "
                                                    "of critical findings or a severity)"))
        has_coords = point is not None or ("lat" in cols and "lng" in cols) or "geometry" in table.column_names
        if has_coords:
            lng, lat, _ = read_locations(src, cols, rej, report, con=con, point=point, crs=crs)
        else:
            by_code = sites.set_index("code")
            s = pd.Series(site_code, dtype=object)
            lng = s.map(by_code["lng"]).to_numpy(dtype="float64")
            lat = s.map(by_code["lat"]).to_numpy(dtype="float64")
        rows = PointRows(con, "inspections", "inspection_id", table, cols, rej, lng, lat, report,
                         prefix="inspection")
        idx = rows.idx
        if rule is not None:
            report.warnings.extend(_label_note(conforming[idx], rule))
        rows.store(con, report, rej, started, columns={
            "site_id": pa.array(pd.to_numeric(pd.Series(site_code[idx], dtype=object)), pa.int64(), from_pandas=True),
            "time": pa.array(times[idx]),
            "inspector": pa.array(strings(table, cols.get("inspector"))[idx], pa.string()),
            "conforming": pa.array(conforming[idx], pa.bool_(), from_pandas=True),
            "problems_found": pa.array(problems[idx], pa.float64(), from_pandas=True).cast(pa.int32(), safe=False),
            "score": pa.array(score[idx], pa.float64(), from_pandas=True),
            "critical": pa.array(critical[idx], pa.bool_(), from_pandas=True),
            "kind": pa.array(strings(table, cols.get("kind"))[idx], pa.string()),
        })
    return report


def _label_note(conforming: np.ndarray, rule: FailRule) -> list[str]:
    """A note on how many loaded visits failed, and how many have no label (their subject was empty)."""
    known = pd.notna(conforming)
    failed = int((conforming[known] == False).sum())  # noqa: E712  (object array of bools)
    out = []
    if known.any():
        out.append(f"--fail-when {rule}: {failed} of {int(known.sum())} labelled visits did not conform "
                   f"({100 * failed / known.sum():.1f}%)")
    if (~known).any():
        out.append(f"{int((~known).sum())} visits have no {rule.subject} and are kept without a result")
    return out
