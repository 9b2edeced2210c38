#!/usr/bin/env python3
"""Score Splink 5 and plain exact keys on a lead file leadflow has linked.

    pip install splink==5.0.0 deltalake pandas
    leadflow generate /tmp/hard.csv --rows 20000 --seed 7 --hard
    leadflow eval leads --file /tmp/hard.csv /tmp/hard.csv.truth.csv \
        --mode probabilistic --dir /tmp/hard-eval
    python3 bench/splink_leads.py /tmp/hard-eval/warehouse /tmp/hard.csv.truth.csv

Both linkers see the same records: the rows of the file that reached
leadflow's `records` table (rejects left out), with leadflow's cleaning
(E.164 phone, e-mail key, "Last, First" split into first and last name,
city and country folded). So the comparison is between linkage models, not
between cleaners; Splink gets the cleaning for free.

The Splink model is the one its lead examples build, made careful for
leads: first and last name compared separately (exact, Jaro-Winkler
bands; `--names combined`: together, swapped names too), term-frequency
adjustment on names, phone,
e-mail, company and city; phone exact or same last 7 digits; Splink's
e-mail comparison; the prior estimated from deterministic rules; u by
random sampling (10 million pairs); m by EM on four blocking rules (no
labels, like `leadflow train`). It prints pairwise precision, recall and
F1 of connected components at Splink's default threshold (match
probability 0.5) and at the best of a sweep, and of exact keys (records
sharing a phone or an e-mail key are one person), scored the way `leadflow
eval leads` scores: pairs of records within a cluster against pairs within
a person of the truth file.
"""
import argparse
import sys
import time

import pandas as pd
from deltalake import DeltaTable

import splink.comparison_library as cl
import splink.comparison_level_library as cll
from splink import DuckDBAPI, Linker, SettingsCreator, block_on


def pairs(sizes) -> int:
    return int(sum(n * (n - 1) // 2 for n in sizes))


def score(df: pd.DataFrame, cluster_col: str) -> tuple[float, float, float]:
    """Pairwise precision, recall, F1 of `cluster_col` against `person`."""
    predicted = pairs(df.groupby(cluster_col).size())
    actual = pairs(df.groupby("person").size())
    both = pairs(df.groupby([cluster_col, "person"]).size())
    p = both / predicted if predicted else 1.0
    r = both / actual if actual else 1.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def exact_keys(df: pd.DataFrame) -> pd.Series:
    """Connected components over shared phone or e-mail key."""
    parent = list(range(len(df)))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for col in ("phone", "email_key"):
        first = {}
        for i, v in enumerate(df[col]):
            if v is None or v != v or v == "":
                continue
            j = first.setdefault(v, i)
            if j != i:
                a, b = find(i), find(j)
                if a != b:
                    parent[a] = b
    return pd.Series([find(i) for i in range(len(df))], index=df.index)


def load(warehouse: str, truth: str, source: str) -> pd.DataFrame:
    cols = ["source", "source_row", "first_name", "last_name", "phone", "email_key",
            "company", "city", "country"]
    rec = DeltaTable(f"{warehouse}/records").to_pandas(columns=cols)
    rec = rec[rec["source"] == source].drop(columns=["source"])
    t = pd.read_csv(truth, dtype={"row": "int64", "person_id": "string"})
    df = rec.merge(t, left_on="source_row", right_on="row", how="inner")
    if len(df) != len(rec):
        sys.exit(f"{truth}: {len(rec) - len(df)} records have no row in the truth file")
    df = df.rename(columns={"person_id": "person", "source_row": "unique_id"})
    df = df.drop(columns=["row"])
    for c in ["first_name", "last_name", "phone", "email_key", "company", "city", "country"]:
        df[c] = df[c].where(df[c].notna() & (df[c] != ""), None)
        if c in ("first_name", "last_name", "company", "city"):
            df[c] = df[c].str.lower()
    df["full_name"] = (df["first_name"].fillna("") + " " + df["last_name"].fillna("")).str.strip()
    df["full_name"] = df["full_name"].where(df["full_name"] != "", None)
    df["phone_last7"] = df["phone"].str[-7:]
    df["email_local"] = df["email_key"].str.split("@").str[0]
    return df.reset_index(drop=True)


def name_comparisons(names: str) -> list:
    """`separate`: first and last name each (Splink's lead and Febrl
    examples); `combined`: one forename/surname comparison that also knows
    swapped names, term frequencies on the full name."""
    if names == "combined":
        return [
            cl.ForenameSurnameComparison(
                "first_name", "last_name", forename_surname_concat_col_name="full_name"
            ).configure(term_frequency_adjustments=True)
        ]
    return [
        cl.NameComparison("first_name").configure(term_frequency_adjustments=True),
        cl.NameComparison("last_name").configure(term_frequency_adjustments=True),
    ]


def settings(names: str) -> SettingsCreator:
    phone = cl.CustomComparison(
        output_column_name="phone",
        comparison_levels=[
            cll.NullLevel("phone"),
            cll.ExactMatchLevel("phone", term_frequency_adjustments=True),
            cll.ExactMatchLevel("phone_last7"),
            cll.ElseLevel(),
        ],
    )
    return SettingsCreator(
        link_type="dedupe_only",
        comparisons=name_comparisons(names) + [
            phone,
            cl.EmailComparison("email_key"),
            cl.JaroWinklerAtThresholds("company", [0.9]).configure(term_frequency_adjustments=True),
            cl.ExactMatch("city").configure(term_frequency_adjustments=True),
            cl.ExactMatch("country"),
        ],
        blocking_rules_to_generate_predictions=[
            block_on("phone"),
            block_on("email_key"),
            block_on("phone_last7"),
            block_on("email_local"),
            block_on("last_name", "city"),
            block_on("first_name", "last_name"),
        ],
        retain_intermediate_calculation_columns=False,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("warehouse", help="the eval warehouse (leadflow eval leads --dir D: D/warehouse)")
    ap.add_argument("truth", help="the file's truth CSV (row,person_id)")
    ap.add_argument("--source", default="file1", help="records of this source (eval: file1)")
    ap.add_argument("--names", choices=["separate", "combined"], default="separate",
                    help="how the Splink model compares names (see name_comparisons)")
    ap.add_argument("--em", nargs="+", default=["phone", "email_key"],
                    help="blocking rules EM trains m on, columns joined by + "
                         "(e.g. first_name+last_name)")
    a = ap.parse_args()

    df = load(a.warehouse, a.truth, a.source)
    print(f"records: {len(df)}, people: {df['person'].nunique()}, true pairs: "
          f"{pairs(df.groupby('person').size())}")

    p, r, f = score(df.assign(ek=exact_keys(df)), "ek")
    print(f"exact keys (phone or e-mail key): precision {p:.4f} recall {r:.4f} F1 {f:.4f}")

    t0 = time.time()
    db = DuckDBAPI()
    sdf = db.register(df.drop(columns=["person"]), dataset_display_name="leads")
    s = settings(a.names)
    linker = Linker(sdf, s, log_level=None)
    linker.training.estimate_probability_two_random_records_match(
        [block_on("phone", "first_name", "last_name"), block_on("email_key", "first_name", "last_name")],
        recall=0.7,
    )
    linker.training.estimate_u_using_random_sampling(max_pairs=1e7, seed=1)
    for cols in a.em:
        rule = block_on(*cols.split("+"))
        linker.training.estimate_parameters_using_expectation_maximisation(
            rule, estimate_without_term_frequencies=True
        )
    pred = linker.inference.predict(threshold_match_probability=0.01)
    trained = time.time() - t0

    best = None
    print("Splink 5 (connected components), threshold: precision recall F1")
    for th in (0.5, 0.2, 0.8, 0.9, 0.95, 0.97, 0.98, 0.985, 0.99, 0.993, 0.995, 0.997, 0.999, 0.9999):
        clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(pred, th).as_pandas_dataframe()
        m = df.merge(clusters[["unique_id", "cluster_id"]], on="unique_id", how="left")
        m["cluster_id"] = m["cluster_id"].fillna(m["unique_id"].astype(str))
        p, r, f = score(m, "cluster_id")
        tag = " (default)" if th == 0.5 else ""
        print(f"  {th:<7} {p:.4f} {r:.4f} {f:.4f}{tag}")
        if best is None or f > best[3]:
            best = (th, p, r, f)
    print(f"Splink best: threshold {best[0]}: precision {best[1]:.4f} recall {best[2]:.4f} F1 {best[3]:.4f}")
    print(f"Splink train + predict: {trained:.1f} s")


if __name__ == "__main__":
    main()
