"""Hostile input, the outer ring: names with path characters, zip bombs and huge sparse model files,
suites of a million runs, links out of a results folder. Each is a message (exit status 2) in bounded
time and memory, and nothing is written or deleted through a link."""

import os
import resource
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

from cat_bench import records
from cat_bench.cli import main
from cat_bench.errors import UsageError

MILLION = """
description = "a grid a typo made: a million runs"
[[runs]]
methods = ["at"]
dataset = "mnist-mini"
eps = [0.3]
seeds = [{seeds}]
hparams = {{loss_reduction = "mean"}}
attacks = ["natural"]
"""


def test_a_suite_of_a_million_runs_is_refused_at_once(tmp_path, capsys):
    suite = tmp_path / "million.toml"
    suite.write_text(MILLION.format(seeds=", ".join(map(str, range(1_000_000)))))
    t0 = time.time()
    code = main(["run", "--suite", str(suite), "--results", str(tmp_path / "r"), "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2 and "expands to 1,000,000 runs" in err and "at most 10,000" in err, err
    assert time.time() - t0 < 60 and not (tmp_path / "r").exists()


def _bomb(path: Path, size: int) -> None:
    """A torch.save file whose one tensor's member is deflated `size` zero bytes (a zip bomb)."""
    torch.save({"w": torch.zeros(4)}, path)
    with zipfile.ZipFile(path) as src:
        members = [(info, src.read(info)) for info in src.infolist()]
    with zipfile.ZipFile(path, "w") as out:
        for info, data in members:
            out.writestr(info, data, compress_type=zipfile.ZIP_STORED)
        out.writestr("archive/data/bomb", b"\0" * size, compress_type=zipfile.ZIP_DEFLATED)


def test_a_zip_bomb_is_refused_before_it_is_read(tmp_path):
    bomb = tmp_path / "bomb.pt"
    _bomb(bomb, 64 << 20)
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(UsageError, match="zip bomb"):
        records.load_checkpoint(bomb)
    code = subprocess.run([sys.executable, "-m", "cat_bench.cli", "eval", str(bomb), "--arch", "smallcnn",
                           "--dataset", "mnist-mini", "--results", str(tmp_path / "r"), "--attacks", "natural",
                           "--no-progress"], capture_output=True, text=True, timeout=300)
    assert code.returncode == 2 and "zip bomb" in code.stderr and "Traceback" not in code.stderr, code.stderr


def test_a_huge_sparse_model_file_is_a_message_in_bounded_memory(tmp_path):
    sparse = tmp_path / "sparse.pt"
    with open(sparse, "wb") as fh:
        fh.truncate(10 << 30)  # 10 GB of holes: no disk used
    limit = 6 << 30  # address space: torch maps more than it uses; a read of the file would pass it

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    proc = subprocess.run([sys.executable, "-m", "cat_bench.cli", "eval", str(sparse), "--arch", "smallcnn",
                           "--dataset", "mnist-mini", "--results", str(tmp_path / "r"), "--attacks", "natural",
                           "--no-progress"], capture_output=True, text=True, timeout=300, preexec_fn=cap,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2 and "sparse.pt" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("name", ["../escape", "a/b", "line\nbreak", ".hidden", "", "ünïcode"])
def test_a_model_name_with_path_characters_is_refused(name, tmp_path, capsys):
    run = tmp_path / "not-used"
    code = main(["export", str(run), "--name", name, "--trained-with", "x"])
    err = capsys.readouterr().err
    assert code == 2 and "--name" in err, err
    assert sorted(tmp_path.iterdir()) == []


def test_a_run_folder_linked_out_of_the_results_is_neither_written_nor_deleted(tmp_path, capsys):
    """results/runs/NAME a link to a folder elsewhere: every command reads around it, none writes or
    deletes through it."""
    import shutil

    from conftest import tree

    smoke = Path(__file__).resolve().parents[1] / "results" / "smoke" / "runs"
    original = next(smoke.glob("at-mnist-mini-*"))
    outside = tmp_path / "outside" / original.name
    shutil.copytree(original, outside)
    results = tmp_path / "results"
    (results / "runs").mkdir(parents=True)
    (results / "runs" / original.name).symlink_to(outside)
    before = tree(outside)
    scope = ["--suite", "smoke", "--only", "method=at", "--results", str(results)]
    for argv in (["status", *scope], ["results", *scope], ["report", *scope], ["run", *scope, "--dry-run"],
                 ["eval", str(results / "runs" / original.name), "--attacks", "natural", "--n-examples", "20"]):
        code = main(argv)
        out = capsys.readouterr()
        assert code in (0, 1, 2) and "Traceback" not in out.err, (argv, out.err)
    assert tree(outside) == before and (results / "runs" / original.name).is_symlink()
