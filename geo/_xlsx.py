"""Excel workbooks (XLSX, XLSM, XLS through calamine): the header row found below title rows, two-row headers
combined, cells as text."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np
import pyarrow as pa
from civicgrid.geo._tables import ReadResult, dedupe_names
from civicgrid.geo.errors import ReadError

#: Rows scanned from the top of a sheet to find the header row below any title rows.
_HEADER_SCAN_ROWS = 30


def _cell_text(v) -> str | None:
    """Text of one spreadsheet cell value as calamine returns it."""
    if v is None or v == "":
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if v.is_integer() and abs(v) < 1e16:
            return str(int(v))
        return repr(v)
    if isinstance(v, _dt.datetime):
        return v.isoformat(sep=" ")
    if isinstance(v, _dt.date | _dt.time):
        return v.isoformat()
    if isinstance(v, _dt.timedelta):
        return str(v)
    s = str(v).strip()
    return s or None


def _excel_column(i: int) -> str:
    name = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        name = chr(65 + r) + name
    return name


def read_xlsx(p: Path, sheet: str | int | None) -> ReadResult:
    import python_calamine as cal

    try:
        book = cal.CalamineWorkbook.from_path(str(p))
    except Exception as exc:  # calamine raises its own error types for corrupt files
        msg = f"{p.name} is not a readable Excel workbook ({exc})"
        raise ReadError(msg) from exc
    names = book.sheet_names
    if not names:
        msg = f"{p.name} has no sheets"
        raise ReadError(msg)
    if sheet is None:
        chosen = names[0]
    elif isinstance(sheet, int) or (isinstance(sheet, str) and sheet.isdigit() and sheet not in names):
        k = int(sheet)
        if not 0 <= k < len(names):
            msg = f"{p.name} has {len(names)} sheets; sheet index {k} does not exist (sheets: {', '.join(names)})"
            raise ReadError(msg)
        chosen = names[k]
    elif sheet in names:
        chosen = sheet
    else:
        msg = f"{p.name} has no sheet {sheet!r}; its sheets are: {', '.join(names)}"
        raise ReadError(msg)
    ws = book.get_sheet_by_name(chosen)
    grid = [[_cell_text(v) for v in row] for row in ws.to_python(skip_empty_area=False)]
    warnings: list[str] = []
    if len(names) > 1 and sheet is None:
        warnings.append(f"read the first sheet {chosen!r} of {len(names)} ({', '.join(names)}); choose with --sheet")
    if not any(any(v is not None for v in row) for row in grid):
        msg = f"{p.name} is empty: sheet {chosen!r} has no cells"
        raise ReadError(msg)
    width = max(len(r) for r in grid)
    grid = [r + [None] * (width - len(r)) for r in grid]
    merged = list(getattr(ws, "merged_cell_ranges", None) or [])
    header_row, header, n_header_rows = _find_header(grid, merged, warnings)
    data = grid[header_row + n_header_rows:]
    first_row = header_row + n_header_rows + 1  # 1-based spreadsheet row of data[0]
    keep = [i for i, r in enumerate(data) if any(v is not None for v in r)]
    cols = [c for c in range(width) if header[c] is not None or any(data[i][c] is not None for i in keep)]
    for c in cols:
        if header[c] is None:
            header[c] = f"column {_excel_column(c)}"
    arrays = [pa.array([data[i][c] for i in keep], pa.string()) for c in cols]
    table = pa.table(arrays, names=[header[c] for c in cols]) if cols else pa.table({})
    table = dedupe_names(table, warnings)
    table = table.append_column("__row__", pa.array(np.asarray(keep, dtype="int64") + first_row))
    return ReadResult(table=table, format="xlsx", crs=None, encoding=None, warnings=warnings)


def _find_header(grid: list[list], merged: list, warnings: list[str]) -> tuple[int, list, int]:
    """Find the header row (below any title rows) and merge a second header row into it.

    A title row is a row above the header with few filled cells (often one cell
    merged across the table). A header is two rows when a header cell is merged
    across several columns with sub-headers below it (位置 → 经度 | 纬度), or
    header cells are merged down into the next row. Without merge information,
    a second row that only fills the header's gaps (and the cell before each)
    with text is taken as a sub-header row.

    Returns
    -------
    row, names, n_rows
        0-based index of the header row, the column names, and 1 or 2.
    """
    counts = [sum(v is not None for v in row) for row in grid[:_HEADER_SCAN_ROWS]]
    widest = max(counts)
    need = max(2, int(np.ceil(widest * 0.5))) if widest > 1 else 1
    h = next(i for i, n in enumerate(counts) if n >= need)
    if h:
        titles = [next(v for v in grid[i] if v is not None) for i in range(h) if counts[i]]
        if titles:
            warnings.append("skipped title rows above the header: " + " / ".join(titles))
    width = len(grid[0])
    top = list(grid[h])
    grouped: set[int] = set()  # header columns under a cell merged across several columns
    down = False
    for (r0, c0), (r1, c1) in merged:
        if r0 <= h <= r1 and c1 > c0:
            for c in range(c0, min(c1, width - 1) + 1):
                grouped.add(c)
                if top[c] is None:
                    top[c] = grid[r0][c0]
        if r0 == h and r1 > h:
            down = True
    nxt: list = grid[h + 1] if h + 1 < len(grid) else [None] * width
    filled = {c for c in range(width) if nxt[c] is not None}
    two_rows = bool(filled & grouped) or down
    if not two_rows and not merged and filled:
        gaps = {c for c in range(width) if top[c] is None and c > 0 and top[c - 1] is not None}
        allowed = gaps | {c - 1 for c in gaps}
        single = {c for c in range(width) if top[c] is not None} - allowed
        if gaps and filled & gaps and filled <= allowed and single and not any(_looks_numeric(nxt[c]) for c in filled):
            for c in sorted(gaps):
                j = c - 1
                while top[c] is None:
                    top[c] = top[j]
                grouped.update({c, c - 1})
            two_rows = True
    if not two_rows:
        return h, top, 1
    names = [nxt[c] if nxt[c] is not None else top[c] for c in range(width)]
    # A sub-header that repeats (发现位置/经度 and 整改位置/经度) keeps its group name in front.
    seen: dict[str, int] = {}
    for n in names:
        if n is not None:
            seen[n] = seen.get(n, 0) + 1
    for c in range(width):
        if names[c] is not None and seen[names[c]] > 1 and c in grouped and top[c] not in (None, names[c]):
            names[c] = f"{top[c]}_{names[c]}"
    warnings.append(f"two-row header (rows {h + 1}-{h + 2}) combined into one")
    return h, names, 2


def _looks_numeric(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True
