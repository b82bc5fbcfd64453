"""Workbooks (XLSX) written from the store: cells hold values, never formulas.

openpyxl stores any text that starts with ``=`` as a formula, which Excel and WPS evaluate when the file is
opened: a site, unit or grid called ``=HYPERLINK("http://…","点此")`` would become a live link (or worse) in a
report sent round the office. civicgrid writes no formulas of its own, so every formula cell is turned back into
the text it was given.
"""

from __future__ import annotations


def save_values_only(wb, target) -> None:
    """Save the openpyxl workbook ``wb`` to ``target`` (a path or a binary file) with every formula cell as text."""
    for ws in wb.worksheets:
        for row in ws.iter_rows():
            for cell in row:
                if cell.data_type == "f":
                    cell.data_type = "s"
    wb.save(target)
