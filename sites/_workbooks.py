"""Workbooks (XLSX) and spreadsheet CSVs written from the store: cells hold values, never formulas.

openpyxl stores any text that starts with ``=`` as a formula, which Excel and WPS evaluate when the file is
opened: a site, unit or grid called ``=HYPERLINK("http://…","点此")`` would become a live link (or worse) in a
report sent round the office. civicgrid writes no formulas of its own, so every formula cell is turned back into
the text it was given.

A CSV has no cell types: Excel and WPS read a field starting with ``=``, ``+``, ``-``, ``@`` (or a tab or carriage
return before one) as a formula. CSVs meant to be opened in a spreadsheet therefore get a leading apostrophe on such
*text* fields (the OWASP rule), which the spreadsheet shows as the text itself; numbers (``-3``) are left alone.
"""

from __future__ import annotations

import pandas as pd

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def save_values_only(wb, target) -> None:
    """Save the openpyxl workbook ``wb`` to ``target`` (a path or a binary file) with every formula cell as text."""
    for ws in wb.worksheets:
        for row in ws.iter_rows():
            for cell in row:
                if cell.data_type == "f":
                    cell.data_type = "s"
    wb.save(target)


def _text_as_text(value):
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def save_spreadsheet_csv(df: pd.DataFrame, target) -> None:
    """Write ``df`` as a UTF-8 CSV with a BOM (Excel opens it as UTF-8) where no text field can run as a formula."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object or pd.api.types.is_string_dtype(out[col].dtype):
            out[col] = out[col].map(_text_as_text)
    out.to_csv(target, index=False, encoding="utf-8-sig")
