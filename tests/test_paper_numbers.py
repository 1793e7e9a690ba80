"""The paper's published numbers (results/paper/*.csv, cat_bench.paper) against the paper's text.

The text (../shared/paper/calibrated-adversarial-training.txt) keeps the tables' cells but lost
the labels' parentheses and the "±" signs ("84.1 0.3", "54.90.3"); docs/method.md s5 restores the
labels and order. The checks here locate each table's block in the text by its header line and
compare cells by position.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import pandas as pd
import pytest

from cat_bench import paper
from cat_bench.errors import UsageError
from cat_bench.paper import COLUMNS, TABLES, load_published

REPO = Path(__file__).resolve().parents[1]
PAPER_TEXT = REPO.parent / "shared/paper/calibrated-adversarial-training.txt"

WIDE = ("natural", "fgsm", "pgd20", "pgd100", "cw", "avg")
CAT_ROWS = ["CATcent (b=0.05)", "CATcent (b=0.1)", "CATcw (b=0.05)", "CATcw (b=0.1)"]

# Printed row order of each table's block in the text (docs/method.md s5); None = a row with no numbers.
TEXT_ROWS: dict[str, list[str | None]] = {
    "1": ["AT (eps_train=0.3)", None, "TRADES (eps_train=0.3)", "TRADES (eps_train=0.4)",
          "CATcent (eps_train=0.3)", "CATcent (eps_train=0.4)", "CATcw (eps_train=0.3)", "CATcw (eps_train=0.4)"],
    "2": ["AT", "TRADES", "MART", "FAT", *CAT_ROWS, "CATcent (b=0.3)", "CATcw (b=0.3)"],
    "3": ["AT", "TRADES", "MART", "FAT", *CAT_ROWS, "CATcent (b=0.3)", "CATcw (b=0.3)"],
    "4": ["AT", "TRADES", "MART", "FAT", *CAT_ROWS],
    "7": ["AT", *CAT_ROWS],
}
TEXT_METRICS = {"1": ("natural", "pgd20", "pgd100"), "2": WIDE, "3": WIDE, "7": WIDE}
TABLE4_ARCH_COLUMN = {"preact-resnet18": 0, "wrn-34-10": 1}  # "Models | ResNet | WRN |"
# Table 8 line: a | nat | pgd | b | nat | pgd (CATcent) | a | nat | pgd | b | nat | pgd (CATcw)
TABLE8_OFFSET = {"cat-cent": 0, "cat-cw": 6}

# Hand-picked cells: (table, row, arch or None, metric, mean, std) exactly as printed.
SAMPLE = [
    ("1", "AT (eps_train=0.3)", None, "natural", "99.2", ""),
    ("1", "TRADES (eps_train=0.4)", None, "pgd100", "91.6", ""),
    ("1", "CATcw (eps_train=0.4)", None, "pgd100", "96.2", ""),
    ("1", "CATcent (eps_train=0.3)", None, "pgd20", "95.4", ""),
    ("2", "MART", None, "fgsm", "60.2", ""),
    ("2", "CATcent (b=0.05)", None, "natural", "84.1", "0.3"),
    ("2", "CATcent (b=0.1)", None, "pgd100", "53.4", "0.06"),
    ("2", "CATcent (b=0.1)", None, "cw", "50.44", "0.3"),
    ("2", "CATcw (b=0.3)", None, "cw", "48.8", "0.2"),
    ("3", "FAT", None, "natural", "86.6", "0.6"),
    ("3", "CATcent (b=0.1)", None, "natural", "87.5", "0.51"),
    ("3", "CATcw (b=0.1)", None, "cw", "55.6", "0.07"),
    ("3", "CATcent (b=0.3)", None, "fgsm", "59.8", "0.6"),
    ("3", "CATcent (b=0.3)", None, "avg", "61.8", ""),
    ("4", "AT", "preact-resnet18", "square", "55.12", ""),
    ("4", "CATcent (b=0.1)", "wrn-34-10", "square", "59.6", "0.8"),
    ("4", "CATcw (b=0.05)", "wrn-34-10", "square", "60.9", "0.1"),
    ("4", "CATcw (b=0.1)", "preact-resnet18", "square", "56.5", "0.1"),
    ("7", "AT", None, "avg", "33.06", ""),
    ("7", "CATcw (b=0.05)", None, "natural", "58.9", ""),
    ("7", "CATcent (b=0.1)", None, "cw", "24.17", ""),
    ("8", "CATcent (a=2, b=0.05)", None, "natural", "86.4", ""),
    ("8", "CATcw (a=1, b=0.05)", None, "pgd20", "50.8", ""),
    ("8", "CATcw (a=5, b=0.2)", None, "pgd20", "52.8", ""),
]


def _raw(table: str) -> list[dict[str, str]]:
    """A CSV's lines as printed strings (no float round trip)."""
    with open(paper.paper_dir() / f"table{table}.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.split("|")]


def _cell_matches(cell: str, mean: str, std: str) -> bool:
    """A text cell prints `mean`, or `mean std` / `mean±std` / `meanstd` (the text lost "±")."""
    if not std:
        return cell == mean
    return re.fullmatch(re.escape(mean) + r"\s*(±\s*)?" + re.escape(std), cell) is not None


@pytest.fixture(scope="module")
def text_lines() -> list[str]:
    if not PAPER_TEXT.is_file():
        pytest.skip(f"the paper's text is not at {PAPER_TEXT}")
    return PAPER_TEXT.read_text(encoding="utf-8").splitlines()


def _block(lines: list[str], table: str) -> list[str]:
    """The text lines holding a table's rows (after its header line)."""
    headers = {
        "1": ("Models | Natural | PGD-20 | PGD-100 |", 0, 8),
        "2": ("Models | Natural | FGSM | PGD-20 | PGD-100 | CW∞ | Avg |", 0, 10),
        "3": ("Models | Natural | FGSM | PGD-20 | PGD-100 | CW∞ | Avg |", 1, 10),
        "4": ("Models | ResNet | WRN |", 0, 8),
        "7": ("Models | Natural | FGSM | PGD-20 | PGD-100 | C&W∞ | Avg |", 0, 5),
        "8": ("a | PGD-20 | b | PGD-20 |", 0, 5),
    }
    header, which, n = headers[table]
    starts = [i for i, line in enumerate(lines) if line.strip().startswith(header)]
    assert len(starts) > which, f"table {table}: header {header!r} not found in the text"
    return lines[starts[which] + 1 : starts[which] + 1 + n]


def _text_cells(lines: list[str], table: str, row: str, arch: str, metric: str) -> list[str]:
    """The text cell(s) where a CSV line's number is printed (Table 8's a=5, b=0.05 is printed twice)."""
    block = _block(lines, table)
    if table == "8":
        m = re.fullmatch(r"(CATcent|CATcw) \(a=([\d.]+), b=([\d.]+)\)", row)
        assert m, row
        off = TABLE8_OFFSET["cat-cent" if m[1] == "CATcent" else "cat-cw"]
        col = 1 if metric == "natural" else 2
        found = []
        for line in block:
            c = _cells(line)
            if m[3] == "0.05" and c[off] == m[2]:  # a-sweep (b fixed at 0.05)
                found.append(c[off + col])
            if m[2] == "5" and c[off + 3] == m[3]:  # b-sweep (a fixed at 5)
                found.append(c[off + 3 + col])
        return found
    line = block[TEXT_ROWS[table].index(row)]
    values = _cells(line)[1:]
    if table == "4":
        return [values[TABLE4_ARCH_COLUMN[arch]]]
    k = TEXT_METRICS[table].index(metric)
    if table == "3" and row == "CATcent (b=0.3)":
        k -= 1  # its natural cell was lost: the printed cells start at FGSM
    return [values[k]]


# --- the files -----------------------------------------------------------------------------------


@pytest.mark.parametrize("table", TABLES)
def test_file_has_exact_columns_and_loads(table):
    with open(paper.paper_dir() / f"table{table}.csv", newline="", encoding="utf-8") as f:
        header = next(csv.reader(f))
    assert tuple(header) == COLUMNS
    df = load_published(table)
    assert list(df.columns) == [*COLUMNS, "eps_value"]
    assert len(df) > 0 and set(df["table"]) == {table}
    assert df["mean"].dtype == float and df["std"].dtype == float
    assert df["mean"].between(0, 100).all() and not df["mean"].isna().any()


@pytest.mark.parametrize("table", TABLES)
def test_rows_are_unique_and_well_formed(table):
    df = load_published(table)
    assert not df.duplicated(["row", "arch", "metric"]).any()
    if table != "4":  # Table 4 holds each row twice, once per architecture column
        assert not df.duplicated(["row", "metric"]).any()
    from cat_bench.methods import METHODS
    from cat_bench.models import ARCHITECTURES

    assert set(df["method"]) <= set(METHODS) - {"natural"}
    assert set(df["arch"]) <= set(ARCHITECTURES)
    assert set(df["dataset"]) <= {"mnist", "cifar10", "cifar100"}
    assert set(df["metric"]) <= {"natural", "fgsm", "pgd20", "pgd100", "cw", "square", "avg"}
    is_cat = df["method"].str.startswith("cat-")
    assert df.loc[is_cat, ["a", "b"]].notna().all().all()
    assert df.loc[~is_cat, ["a", "b"]].isna().all().all()
    assert set(df["eps"]) <= {"8/255", "0.3", "0.4"}
    # MNIST rows name the network each method's official script trains (the paper does not say).
    from cat_bench.methods import default_arch
    mnist = df[df["dataset"] == "mnist"]
    assert (mnist["arch"] == mnist["method"].map(lambda m: default_arch(m, "mnist"))).all()
    assert not df.loc[df["dataset"] != "mnist", "arch"].isin(["smallcnn", "madry-cnn", "trades-smallcnn"]).any()
    for row, group in df.groupby("row"):
        assert group["method"].nunique() == 1, row
        label = group["method"].iloc[0]
        prefix = {"at": "AT", "trades": "TRADES", "mart": "MART", "fat": "FAT",
                  "cat-cent": "CATcent", "cat-cw": "CATcw"}[label]
        assert row == prefix or row.startswith(prefix + " ("), row


def test_load_all_and_parsing():
    df = load_published()
    assert list(df["table"].unique()) == list(TABLES)
    assert len(df) == sum(len(load_published(t)) for t in TABLES)
    cifar = df[df["eps"] == "8/255"]
    assert math.isclose(cifar["eps_value"].iloc[0], 8 / 255)
    assert set(df.loc[df["eps"] == "0.4", "eps_value"]) == {0.4}
    at = df[(df["table"] == "2") & (df["row"] == "AT")]
    assert at["a"].isna().all() and at["b"].isna().all() and at["std"].isna().all()
    cat = df[(df["table"] == "8") & (df["row"] == "CATcw (a=3, b=0.05)")]
    assert set(cat["a"]) == {3.0} and set(cat["b"]) == {0.05}
    mnist_cat = df[(df["table"] == "1") & df["method"].str.startswith("cat-")]
    assert set(mnist_cat["a"]) == {1.0} and set(mnist_cat["b"]) == {0.3}  # docs/method.md s1 MNIST defaults


def test_unknown_table_is_a_usage_error():
    with pytest.raises(UsageError, match=r"'5'.*1, 2, 3, 4, 7, 8"):
        load_published("5")


def test_located_as_installed_package_data():
    assert (paper.paper_dir() / "table1.csv").is_file()
    assert Path(str(paper.paper_dir())).resolve() == (REPO / "results" / "paper").resolve()


def test_source_tree_fallback(monkeypatch):
    def missing(name):
        raise ModuleNotFoundError(name)

    monkeypatch.setattr(paper.resources, "files", missing)
    assert paper.paper_dir() == REPO / "results" / "paper"
    assert len(load_published("7")) == 30


# --- against the paper's text --------------------------------------------------------------------


@pytest.mark.parametrize("table,row,arch,metric,mean,std", SAMPLE)
def test_sample_cell_matches_csv_and_text(text_lines, table, row, arch, metric, mean, std):
    hits = [r for r in _raw(table) if r["row"] == row and r["metric"] == metric and arch in (None, r["arch"])]
    assert len(hits) == 1, (table, row, arch, metric)
    assert (hits[0]["mean"], hits[0]["std"]) == (mean, std)
    line_cells = _text_cells(text_lines, table, row, hits[0]["arch"], metric)
    assert line_cells and all(_cell_matches(c, mean, std) for c in line_cells), line_cells


def test_sample_covers_the_brief():
    tables = {s[0] for s in SAMPLE}
    assert tables == set(TABLES) and len(SAMPLE) >= 15
    assert any(s[5] for s in SAMPLE) and any(not s[5] for s in SAMPLE)
    assert {"preact-resnet18", "wrn-34-10"} <= {s[2] for s in SAMPLE}


@pytest.mark.parametrize("table", TABLES)
def test_every_csv_cell_is_printed_in_the_text(text_lines, table):
    for r in _raw(table):
        found = _text_cells(text_lines, table, r["row"], r["arch"], r["metric"])
        assert found, r
        assert all(_cell_matches(c, r["mean"], r["std"]) for c in found), (r, found)


@pytest.mark.parametrize("table", TABLES)
def test_every_printed_cell_is_in_the_csv(text_lines, table):
    """Nothing printed was dropped: the count of numeric text cells equals the CSV's lines."""
    block = _block(text_lines, table)
    skip_first = 0 if table == "8" else 1  # the label cell
    numeric = [c for line in block for c in _cells(line)[skip_first:] if re.match(r"^\d", c)]
    if table == "8":
        # each line: 2 a/b key cells per variant; a=5,b=0.05 printed twice (2 cells per variant)
        n_keys = sum(1 for line in block for i in (0, 3, 6, 9) if re.match(r"^\d", _cells(line)[i]))
        expected = len(numeric) - n_keys - 2 * 2
    else:
        expected = len(numeric)
    assert len(_raw(table)) == expected


def test_text_row_labels_agree_with_restored_variants(text_lines):
    """The text still prints the label stem (AT, TRADES, CATcent, CATcw, ...): it matches the restored row."""
    for table, rows in TEXT_ROWS.items():
        for line, row in zip(_block(text_lines, table), rows):
            stem = _cells(line)[0]
            if row is None:
                assert stem.startswith("AT(") and _cells(line)[1:4] == ["-", "-", "-"]
                continue
            want = row.split(" (")[0]
            assert re.match(re.escape(want) + r"\s*\(", stem) or stem == want, (table, row, stem)


# --- docs/method.md s5 -------------------------------------------------------------------------------


def _rows(table: str) -> list[str]:
    return list(dict.fromkeys(load_published(table)["row"]))


def _value(table: str, row: str, metric: str, column: str = "mean") -> float:
    df = load_published(table)
    hit = df[(df["row"] == row) & (df["metric"] == metric)]
    assert len(hit) == 1, (table, row, metric)
    return float(hit[column].iloc[0])


def test_method_s5_row_orders():
    assert _rows("2") == ["AT", "TRADES", "MART", "FAT", "CATcent (b=0.05)", "CATcent (b=0.1)",
                          "CATcw (b=0.05)", "CATcw (b=0.1)", "CATcent (b=0.3)", "CATcw (b=0.3)"]
    assert _rows("3") == _rows("2")
    assert _rows("4") == ["AT", "TRADES", "MART", "FAT", *CAT_ROWS]
    assert _rows("7") == ["AT", *CAT_ROWS]
    assert _rows("1") == [r for r in TEXT_ROWS["1"] if r is not None]
    t2 = load_published("2")
    assert (t2["arch"] == "preact-resnet18").all() and (t2["dataset"] == "cifar10").all()
    assert (load_published("3")["arch"] == "wrn-34-10").all()
    assert (load_published("7")["dataset"] == "cifar100").all()
    for t in ("2", "3", "4", "7"):
        df = load_published(t)
        cat = df[df["method"].str.startswith("cat-")]
        assert set(cat["a"]) == {5.0}
        assert all(f"(b={b:g})" in row for row, b in zip(cat["row"], cat["b"]))


def test_method_s5_missing_cells():
    t3 = load_published("3")
    lost = t3[t3["row"] == "CATcent (b=0.3)"]
    assert "natural" not in set(lost["metric"])
    assert list(lost["metric"]) == ["fgsm", "pgd20", "pgd100", "cw", "avg"]
    assert list(lost["mean"]) == [59.8, 54.8, 53.9, 51.6, 61.8]
    t1 = load_published("1")
    assert t1[(t1["method"] == "at") & (t1["eps"] == "0.4")].empty
    assert set(t1[t1["method"] == "at"]["eps"]) == {"0.3"}
    t4 = load_published("4")
    assert t4[(t4["method"] == "fat") & (t4["arch"] == "wrn-34-10")].empty


def test_method_s5_table8_grid():
    t8 = load_published("8")
    for variant in ("CATcent", "CATcw"):
        rows = [r for r in _rows("8") if r.startswith(variant + " ")]
        assert rows == [f"{variant} (a={a}, b=0.05)" for a in (5, 4, 3, 2, 1)] + [
            f"{variant} (a=5, b={b})" for b in ("0.1", "0.2", "0.3")
        ]
    assert set(t8["metric"]) == {"natural", "pgd20"}


def test_method_s5_labels_match_table8_and_the_authors_log():
    """docs/method.md s5's evidence for the restored b labels of Table 2's CAT rows."""
    # 84.1/55.6 = Table 8's b=0.05 row; 88.0/51.1 and 88.1/51.5 equal Table 8's b=0.3 rows.
    for t2_row, t8_row in [("CATcent (b=0.05)", "CATcent (a=5, b=0.05)"),
                           ("CATcent (b=0.3)", "CATcent (a=5, b=0.3)"),
                           ("CATcw (b=0.3)", "CATcw (a=5, b=0.3)")]:
        for metric in ("natural", "pgd20"):
            assert _value("2", t2_row, metric) == _value("8", t8_row, metric), (t2_row, metric)
    assert (_value("2", "CATcent (b=0.05)", "natural"), _value("2", "CATcent (b=0.05)", "pgd20")) == (84.1, 55.6)
    # 85.9/54.1 and 85.1/54.9 match Table 8's b=0.1 rows within the printed std (run-to-run spread).
    for t2_row, t8_row in [("CATcent (b=0.1)", "CATcent (a=5, b=0.1)"), ("CATcw (b=0.1)", "CATcw (a=5, b=0.1)")]:
        for metric in ("natural", "pgd20"):
            gap = abs(_value("2", t2_row, metric) - _value("8", t8_row, metric))
            assert gap <= _value("2", t2_row, metric, "std") + 1e-9, (t2_row, metric, gap)
    # The authors' test log of CATcw RN18 a=5 b=0.05 eps 8/255: 84.22 / 59.07 / 55.29 / 54.33 / 51.61
    # (natural / FGSM / PGD-20 / PGD-100 / CW-inf): a single run of Table 2's CATcw (b=0.05) row and
    # Table 8's CATcw (a=5, b=0.05).
    log = dict(zip(("natural", "fgsm", "pgd20", "pgd100", "cw"), (84.22, 59.07, 55.29, 54.33, 51.61)))
    natural_t2 = _value("2", "CATcw (b=0.05)", "natural")
    assert round(log["natural"], 1) == natural_t2 == _value("8", "CATcw (a=5, b=0.05)", "natural")
    assert abs(log["pgd20"] - _value("8", "CATcw (a=5, b=0.05)", "pgd20")) <= 0.1
    for metric, v in log.items():  # within the 5-run spread (2 printed stds) of Table 2's row
        spread = 2 * _value("2", "CATcw (b=0.05)", metric, "std")
        assert abs(v - _value("2", "CATcw (b=0.05)", metric)) <= spread + 1e-9, metric
    # ... and not of the b=0.1 row it could be confused with.
    assert round(log["natural"], 1) != _value("2", "CATcw (b=0.1)", "natural")


def test_avg_column_is_printed_for_every_wide_row():
    for t in ("2", "3", "7"):
        df = load_published(t)
        assert set(df[df["metric"] == "avg"]["row"]) == set(df["row"])
        assert df[df["metric"] == "avg"]["std"].isna().all()


def test_frame_is_pandas():
    assert isinstance(load_published("1"), pd.DataFrame)
