"""RobustBench reference rows (results/robustbench/cifar10_linf.csv, cat_bench.references).

Every line is checked field by field against its source file, model_info/cifar10/Linf/NAME.json,
kept byte-identical beside the CSV (its git blob hash is the one recorded for the commit read).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest

from cat_bench import references
from cat_bench.errors import UsageError
from cat_bench.references import COLUMNS, ROBUSTBENCH_ARCH, eps_mismatch, load_references

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "results" / "robustbench"
# CSV column -> model_info key, where the CSV copies the field as written.
COPIED = {"paper": "name", "venue": "venue", "link": "link", "architecture": "architecture",
          "eps": "eps", "clean_acc": "clean_acc", "autoattack_acc": "autoattack_acc", "reported": "reported"}


def _raw() -> list[dict[str, str]]:
    with open(DATA / "cifar10_linf.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


# --- the file ------------------------------------------------------------------------------------


def test_file_has_exact_columns_and_loads():
    with open(DATA / "cifar10_linf.csv", newline="", encoding="utf-8") as f:
        assert tuple(next(csv.reader(f))) == COLUMNS
    df = load_references()
    assert isinstance(df, pd.DataFrame) and len(df) == len(_raw()) > 0
    assert list(df.columns) == [*COLUMNS, "eps_value", "synthetic_data"]
    assert df["clean_acc"].dtype == float and df["autoattack_acc"].dtype == float
    assert not df["model"].duplicated().any()


def test_every_row_is_sourced_and_in_range():
    df = load_references()
    for _, r in df.iterrows():
        assert r["source"] == f"model_info/cifar10/Linf/{r['model']}.json", r["model"]
        assert re.fullmatch(r"[0-9a-f]{40}", r["commit"]) and re.fullmatch(r"[0-9a-f]{40}", r["blob"])
    for col in ("clean_acc", "autoattack_acc", "reported"):
        assert df[col].between(0, 100).all() and not df[col].isna().any(), col
    assert (df["autoattack_acc"] < df["clean_acc"]).all()
    assert df["commit"].nunique() == 1  # one snapshot of the repository


def test_only_the_papers_two_networks_and_no_extra_data():
    from cat_bench.models import ARCHITECTURES

    df = load_references()
    assert set(df["architecture"]) == set(ROBUSTBENCH_ARCH)
    assert (df["arch"] == df["architecture"].map(ROBUSTBENCH_ARCH)).all()
    assert set(df["arch"]) <= set(ARCHITECTURES)
    assert not df["additional_data"].any()
    assert set(df["eps"]) == {"8/255", "0.031"}


def test_well_known_baselines_and_their_eps():
    df = load_references().set_index("model")
    assert {"Madry2018Towards", "Zhang2019Theoretically", "Zhang2020Attacks", "Wu2020Adversarial",
            "Wong2020Fast"} <= set(df.index)
    assert df.loc["Zhang2019Theoretically", "eps"] == "0.031"
    assert df.loc["Zhang2019Theoretically", "eps_value"] == 0.031
    assert math.isclose(df.loc["Wu2020Adversarial", "eps_value"], 8 / 255)
    assert df.loc["Wong2020Fast", "arch"] == "preact-resnet18"


def test_synthetic_data_follows_the_footnote():
    df = load_references().set_index("model")
    assert df.loc["Rebuffi2021Fixing_R18_ddpm", "synthetic_data"]
    assert not df.loc["Zhang2019Theoretically", "synthetic_data"]  # a footnote, but about eps
    assert df["synthetic_data"].sum() == df["footnote"].str.contains("synthetic").sum()


# --- against the source files --------------------------------------------------------------------


@pytest.mark.parametrize("row", _raw(), ids=lambda r: r["model"])
def test_row_matches_its_source_file(row):
    path = DATA / row["source"]
    data = path.read_bytes()
    assert _git_blob_sha1(data) == row["blob"], f"{path} is not the file read at {row['commit']}"
    info = json.loads(data)
    for col, key in COPIED.items():
        assert row[col] == info[key], (col, row[col], info[key])
    assert row["footnote"] == info.get("footnote", "")
    assert info["additional_data"] is False and row["additional_data"] == "false"
    assert info["dataset"] == "cifar10"


def test_every_source_file_kept_has_a_row():
    kept = {p.stem for p in (DATA / "model_info" / "cifar10" / "Linf").glob("*.json")}
    assert kept == {r["model"] for r in _raw()}


# --- loading -------------------------------------------------------------------------------------


def test_filter_by_arch():
    wrn = load_references("wrn-34-10")
    rn = load_references("preact-resnet18")
    assert set(wrn["arch"]) == {"wrn-34-10"} and set(rn["arch"]) == {"preact-resnet18"}
    assert len(wrn) + len(rn) == len(load_references())


def test_unknown_arch_is_a_usage_error():
    with pytest.raises(UsageError, match=r"'wrn-28-10'.*preact-resnet18, wrn-34-10"):
        load_references("wrn-28-10")


def test_missing_or_malformed_file_is_a_usage_error(monkeypatch, tmp_path):
    monkeypatch.setattr(references, "reference_dir", lambda: tmp_path)
    with pytest.raises(UsageError, match="cifar10_linf.csv not found"):
        load_references()
    (tmp_path / "cifar10_linf.csv").write_text("model,clean_acc\nX,1\n", encoding="utf-8")
    with pytest.raises(UsageError, match=r"columns \['model', 'clean_acc'\], expected"):
        load_references()


def test_located_as_installed_package_data():
    assert (references.reference_dir() / "cifar10_linf.csv").is_file()
    assert Path(str(references.reference_dir())).resolve() == DATA.resolve()


def test_source_tree_fallback(monkeypatch):
    def missing(name):
        raise ModuleNotFoundError(name)

    monkeypatch.setattr(references.resources, "files", missing)
    assert references.reference_dir() == DATA
    assert len(load_references()) == len(_raw())


# --- eps mismatch --------------------------------------------------------------------------------


def test_eps_mismatch_marks_0031_against_8_255():
    assert eps_mismatch(0.031, 8 / 255) is True
    assert eps_mismatch(8 / 255, 0.031) is True
    assert eps_mismatch(8 / 255, 8 / 255) is False
    assert eps_mismatch(references.parse_eps("8/255"), 8 / 255) is False


def test_eps_mismatch_over_the_reference_rows():
    df = load_references()
    marked = df[eps_mismatch(8 / 255, df["eps_value"])]
    assert set(marked["eps"]) == {"0.031"}
    assert "Zhang2019Theoretically" in set(marked["model"])
    assert not eps_mismatch(0.031, df.loc[df["eps"] == "0.031", "eps_value"]).any()
