#!/usr/bin/env python3
"""Writes drops/2025-03-walkins.xlsx, the walk-in register of the quickstart.

Run from anywhere: `pip install openpyxl && python3 examples/quickstart/make_xlsx.py`.
The workbook is committed; this script is how it was made, so it can be
changed and made again. What it exercises (see README.md):

- two sheets, "Notes" first and "Walk-ins" second: a reader that takes the
  first sheet gets the notes, so the pipeline must pick the sheet by name;
- phones stored as Excel NUMBER cells (919820012345 must come out as
  "919820012345", not 9.19820E+11 or "919820012345.0");
- a phone stored as text with its leading zero ("09876501234");
- "Date of visit" as real Excel date cells (serial numbers with a date format);
- a name-only row (no phone, no e-mail): a reject.
"""

import datetime as dt
import pathlib
import re
import zipfile

from openpyxl import Workbook
from openpyxl.styles import Font

OUT = pathlib.Path(__file__).resolve().parent / "drops" / "2025-03-walkins.xlsx"

HEADER = ["Name", "Phone", "Email", "Project", "Date of visit", "City", "Remarks"]

# Phones: int = NUMBER cell, str = text cell. None = empty cell.
ROWS = [
    ("Vikram Mehta", 919820012345, None, "Riverside Towers", dt.date(2025, 3, 15), "Mumbai", "Came with family for a site visit"),
    ("Pooja Menon", "09876501234", "pooja.menon@gmail.com", "Lakeside Villas", dt.date(2025, 3, 15), "Kochi", None),
    ("Anil Sharma", 9811145678, None, "Lakeside Villas", dt.date(2025, 3, 16), "New Delhi", "Also wants to see Lakeside"),
    ("Zoë Clarke", "+44 7912 345678", None, "Riverside Towers", dt.date(2025, 3, 16), "London", "NRI buyer, visiting family"),
    ("Suresh", None, None, "Riverside Towers", dt.date(2025, 3, 16), None, "Did not leave a number"),
    ("Harish Reddy", 8886123456, "harish.reddy@gmail.com", "Riverside Towers", dt.date(2025, 3, 17), "Hyderabad", None),
    ("Lakshmi Narayanan", 7395012345, None, "Lakeside Villas", dt.date(2025, 3, 17), "Chennai", None),
    ("Daniel Wu", "+852 6987 6543", "daniel.wu@harbourview.hk", "Riverside Towers", dt.date(2025, 3, 18), "Hong Kong", None),
    ("Nisha Agarwal", "90045 12345", "nisha.agarwal@yahoo.com", "Riverside Towers", dt.date(2025, 3, 18), "Mumbai", None),
    ("Imran Sheikh", 919930112233, None, "Lakeside Villas", dt.date(2025, 3, 19), "Mumbai", "Investor, 2 units"),
    ("Rohan Sharma", "+91 99301 22334", None, "Lakeside Villas", dt.date(2025, 3, 19), "Pune", None),
    ("Gayatri Pillai", 9895012345, "gayatri.pillai@gmail.com", "Riverside Towers", dt.date(2025, 3, 20), "Kochi", None),
]

NOTES = [
    ["Walk-in register, site office, March 2025"],
    ["Filled in by the front desk; one line per visiting family."],
    ["Name", "Phone"],  # looks like a header on purpose: the wrong sheet must not be read as leads
    ["Front desk", "Ext. 100"],
]

FIXED = dt.datetime(2025, 3, 21, 9, 0, 0)


def main() -> None:
    wb = Workbook()
    notes = wb.active
    notes.title = "Notes"
    for r in NOTES:
        notes.append(r)
    notes.column_dimensions["A"].width = 60

    ws = wb.create_sheet("Walk-ins")
    ws.append(HEADER)
    for c in ws[1]:
        c.font = Font(bold=True)
    for row in ROWS:
        ws.append(list(row))
        r = ws.max_row
        phone = ws.cell(row=r, column=2)
        if isinstance(phone.value, int):
            phone.number_format = "0"  # shown in full in Excel, stored as a number
        else:
            phone.number_format = "@"  # text
        ws.cell(row=r, column=5).number_format = "dd/mm/yyyy"
    for col, width in zip("ABCDEFG", (22, 18, 28, 18, 14, 12, 34)):
        ws.column_dimensions[col].width = width

    wb.properties.creator = "leadflow quickstart"
    wb.properties.created = FIXED
    wb.properties.modified = FIXED
    OUT.parent.mkdir(parents=True, exist_ok=True)
    wb.save(OUT)
    _fix_zip_times(OUT)
    print(f"wrote {OUT}")


def _fix_zip_times(path: pathlib.Path) -> None:
    """Same bytes on every run: pin the zip entries' timestamps and the
    "modified" property, which openpyxl sets to the time of saving."""
    with zipfile.ZipFile(path) as z:
        entries = [(i.filename, z.read(i.filename)) for i in z.infolist()]
    stamp = FIXED.strftime("%Y-%m-%dT%H:%M:%SZ").encode()
    entries = [
        (n, re.sub(rb"(<dcterms:modified[^>]*>)[^<]*", rb"\g<1>" + stamp, d) if n == "docProps/core.xml" else d)
        for n, d in entries
    ]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=FIXED.timetuple()[:6])
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)


if __name__ == "__main__":
    main()
