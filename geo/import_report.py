"""What an import did: the report (counts, columns used, warnings) and the rejected rows with their reasons."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from civicgrid.geo.readers import ReadResult


@dataclass
class ImportReport:
    """What an import did: counts, and every rejected row with its field and reason."""

    layer: str
    file: str
    format: str = ""
    encoding: str | None = None
    crs: str | None = None
    columns: dict[str, str] = field(default_factory=dict)
    rows_read: int = 0
    loaded: int = 0
    #: Events with ``--update``: stored rows replaced by rows of the file that differ (None without it).
    updated: int | None = None
    duplicates: int = 0
    rejected: int = 0
    outside_grids: int = 0
    #: The store had no micro-grid when the rows were located: every row is outside grids, and not for its place.
    no_grids: bool = False
    rejects: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    import_id: int | None = None
    #: Events only: cases created in the import's transaction (``sites.cases.backfill``), rebounds linked.
    cases_created: int | None = None
    rebounds_linked: int | None = None
    #: Events only: type labels of loaded rows that are no known type (label -> rows), and the closest types.
    unmapped_types: dict[str, int] | None = None
    type_suggestions: dict[str, list[str]] | None = None
    #: Events only: loaded rows located by their coordinates, by their area column, by their address, or
    #: kept unlocated (they count in the totals, never on a map).
    located: int | None = None
    located_by_area: int | None = None
    located_by_address: int | None = None
    unlocated: int | None = None
    #: Events only: rows placed by their address, by how exactly (address, number, intersection, road), and the
    #: addresses that name roads but were not placed because the roads are ambiguous (or do not meet).
    address_precision: dict[str, int] | None = None
    addresses_ambiguous: int | None = None
    #: Roads only: the numbered addresses loaded besides the roads (OSM ``addr:housenumber``).
    road_numbers: int | None = None

    def to_dict(self) -> dict:
        """Return the report as a JSON-ready dict."""
        return asdict(self)

    def write_json(self, path: str | os.PathLike) -> None:
        """Write the report as JSON (UTF-8)."""
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=2, default=str), encoding="utf-8")

    def summary(self, *, max_rejects: int = 10) -> str:
        """Return a readable multi-line summary."""
        lines = [
            f"import {self.layer} from {self.file} ({self.format}"
            + (f", {self.encoding}" if self.encoding else "")
            + (f", {self.crs}" if self.crs else "")
            + ")",
            f"  rows read      {self.rows_read:>10,}",
            f"  loaded         {self.loaded:>10,}",
            *([f"  updated        {self.updated:>10,}"] if self.updated is not None else []),
            f"  duplicates     {self.duplicates:>10,}",
            f"  rejected       {self.rejected:>10,}",
        ]
        if self.layer in {"events", "sites", "inspections"}:
            why = ("the city has no micro-grids yet: civicgrid import grids" if self.no_grids
                   else "kept, marked with no grid")
            lines.append(f"  outside grids  {self.outside_grids:>10,}  ({why})")
        if self.cases_created is not None:
            lines.append(f"  cases created  {self.cases_created:>10,}  "
                         f"(rebounds linked: {self.rebounds_linked or 0:,})")
        if self.located is not None:
            lines.append(f"  located        {self.located:>10,}  (by coordinates; by area: "
                         f"{self.located_by_area or 0:,}, by address: {self.located_by_address or 0:,}, "
                         f"unlocated: {self.unlocated or 0:,})")
        if self.address_precision:
            lines.append("  by address as  " + ", ".join(f"{k} {v:,}" for k, v in self.address_precision.items())
                         + (f"; ambiguous, not placed: {self.addresses_ambiguous:,}" if self.addresses_ambiguous
                            else ""))
        if self.road_numbers is not None:
            lines.append(f"  house numbers  {self.road_numbers:>10,}")
        if self.unmapped_types:
            top = list(self.unmapped_types.items())[:5]
            lines.append(f"  unmapped types {len(self.unmapped_types):>10,}  labels kept without a type: "
                         + ", ".join(f"{k} ({v:,})" for k, v in top) + (" …" if len(self.unmapped_types) > 5 else ""))
        if self.columns:
            lines.append("  columns used: " + ", ".join(f"{k}={v}" for k, v in self.columns.items()))
        for w in self.warnings:
            lines.append(f"  warning: {w}")
        if self.rejects:
            kinds = [r["reason"].split(" (")[0].split(":")[0] for r in self.rejects]
            reasons = Counter(kinds)
            if len(reasons) > max_rejects:  # one line per value ('S001', 'S002'…): count by kind of reason
                reasons = Counter(_QUOTED.sub("", k).strip() for k in kinds)
            lines.append("  rejected rows by reason:")
            lines.extend(f"    {n:>8,}  {reason}" for reason, n in reasons.most_common(max_rejects))
            if len(reasons) > max_rejects:
                lines.append(f"    … and {len(reasons) - max_rejects} other reasons")
            lines.append(f"  first {min(max_rejects, len(self.rejects))} rejected rows:")
            lines.extend(
                f"    row {r['row']}: {r['field']}: {r['reason']}" for r in self.rejects[:max_rejects]
            )
        return "\n".join(lines)


#: A quoted value inside a reject reason (``unknown site 'S001'``).
_QUOTED = re.compile(r"""\s*(['"]).*?\1""")


class Rejects:
    """Collects rejected rows (one reason per row: the first problem found)."""

    def __init__(self, rows: np.ndarray) -> None:
        self.rows = np.asarray(rows)
        self.bad = np.zeros(len(rows), dtype=bool)
        self._items: list[tuple[np.ndarray, str, np.ndarray]] = []

    def add(self, mask: np.ndarray, field_name: str, reasons: str | np.ndarray) -> None:
        """Reject rows where ``mask`` is true and that are not rejected yet."""
        new = np.asarray(mask, dtype=bool) & ~self.bad
        if not new.any():
            return
        idx = np.flatnonzero(new)
        if isinstance(reasons, str):
            why = np.full(len(idx), reasons, dtype=object)
        else:
            why = np.asarray(reasons, dtype=object)[idx]
        self._items.append((idx, field_name, why))
        self.bad |= new

    def reasons(self) -> tuple[np.ndarray, np.ndarray]:
        """The field and reason of each row (None where the row is not rejected)."""
        fields = np.full(len(self.rows), None, dtype=object)
        why = np.full(len(self.rows), None, dtype=object)
        for idx, name, w in self._items:
            fields[idx] = name
            why[idx] = w
        return fields, why

    @property
    def ok(self) -> np.ndarray:
        """Mask of rows not rejected."""
        return ~self.bad

    def to_list(self) -> list[dict]:
        """Return ``{row, field, reason}`` dicts in row order."""
        if not self._items:
            return []
        idx = np.concatenate([i for i, _, _ in self._items])
        fields = np.concatenate([np.full(len(i), f, dtype=object) for i, f, _ in self._items])
        why = np.concatenate([w for _, _, w in self._items])
        order = np.argsort(idx, kind="stable")
        rows = self.rows[idx[order]]
        return [
            {"row": int(r), "field": f, "reason": str(w)}
            for r, f, w in zip(rows, fields[order], why[order], strict=True)
        ]


def start_report(layer: str, path, src: ReadResult) -> ImportReport:
    """Create a report for a file that was read."""
    return ImportReport(layer=layer, file=str(path), format=src.format, encoding=src.encoding,
                        rows_read=src.table.num_rows, warnings=list(src.warnings))


#: The rows the file reader of the import under way could not make rows of its table (a wrong number of fields,
#: an unclosed quote, an oversized value: ``ReadResult.rejects``), noted by :func:`note_reader_rejects` when the
#: file is read (``geo.importing.read_input``, ``read_input_batches``) and added by :func:`finish_report`.
_READER_REJECTS: ContextVar[list[dict] | None] = ContextVar("civicgrid_reader_rejects", default=None)


def note_reader_rejects(rejects: list[dict]) -> None:
    """Note the reader's rejects of the file being imported (a list the reader may still fill while it
    streams); the next :func:`finish_report` in this context reports them."""
    _READER_REJECTS.set(rejects)


def finish_report(report: ImportReport, rej: Rejects | list[dict], *, loaded: int, duplicates: int) -> ImportReport:
    """Fill the counts; checks ``rows_read == loaded + updated + duplicates + rejected``.

    ``rej`` is the import's :class:`Rejects`, or the ``{row, field, reason}``
    list of an import read in batches. The rows the file's reader rejected (:func:`note_reader_rejects`) are
    added: counted in ``rows_read`` and ``rejected``, listed in row order with the importer's.
    """
    own = rej if isinstance(rej, list) else rej.to_list()
    read = _READER_REJECTS.get() or []
    _READER_REJECTS.set(None)
    report.rows_read += len(read)
    report.rejects = sorted([*own, *read], key=lambda r: r["row"]) if read else own
    report.rejected = len(report.rejects)
    report.loaded = int(loaded)
    report.duplicates = int(duplicates)
    total = report.loaded + (report.updated or 0) + report.duplicates + report.rejected
    if total != report.rows_read:  # pragma: no cover - an invariant, not an input error
        msg = f"internal error: {report.rows_read} rows read but {total} accounted for"
        raise RuntimeError(msg)
    return report
