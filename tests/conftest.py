"""Shared pytest fixtures."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

SHARED_MNIST_RAW = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "MNIST" / "raw"


def pytest_collection_modifyitems(config, items):
    """Skip tests marked `slow` unless CAT_BENCH_SLOW=1 (RobustBench's @slow gate)."""
    if os.environ.get("CAT_BENCH_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set CAT_BENCH_SLOW=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory) -> Path:
    """A data root whose MNIST/raw holds a copy of the genuine MNIST .gz files (the originals stay read-only)."""
    sources = sorted(SHARED_MNIST_RAW.glob("*.gz"))
    if len(sources) < 4:
        pytest.skip(f"the original MNIST files are not in {SHARED_MNIST_RAW}")
    root = tmp_path_factory.mktemp("mnist-root")
    (root / "MNIST" / "raw").mkdir(parents=True)
    for src in sources:
        shutil.copy(src, root / "MNIST" / "raw" / src.name)
    return root


@pytest.fixture
def synthetic_cifar(tmp_path, monkeypatch):
    """Factory writing small random CIFAR-10/100 data in the real on-disk layout (cat_bench.synthetic);
    returns the data root. torchvision's MD5 check is an existence check for the test's duration."""
    import torchvision.datasets.cifar

    from cat_bench.synthetic import write_cifar

    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity",
                        lambda fpath, md5=None: os.path.isfile(fpath))

    def make(name: str = "cifar10", n_train: int = 50, n_test: int = 20, seed: int = 0) -> Path:
        return write_cifar(tmp_path / f"{name}-data", name, n_train, n_test, seed)

    return make


def _write_run_records(results: Path, spec, *, history: list[dict] | None = None,
                       accuracies: dict[str, float] | None = None, n_examples: int | None = None) -> Path:
    """The records of one run of a suite as training and evaluation write them, with chosen numbers and no
    checkpoint; returns the run directory.

    history: history.jsonl's rows (each needs epoch, nat_acc, rob_acc; best_epoch and seconds are filled
    in); accuracies: percent per attack, written to eval.json with `done` (a finished, evaluated run);
    without them the run is partial. n_examples: the evaluation's size (default: the suite's, else the test set).
    """
    from cat_bench import records
    from cat_bench.data import dataset_info
    from cat_bench.evaluate import _settings
    from cat_bench.orchestrate import run_dir
    from cat_bench.eval_attacks import eval_attack
    from cat_bench.presets import clips
    from cat_bench.config import config_sources

    out = run_dir(results, spec)
    info = dataset_info(spec.config["dataset"])
    records.write_json(out / records.CONFIG, {"identity": spec.config, "sources": config_sources(spec.config),
                                              "provenance": {"hardware": {"device": "cpu"}}})
    best, best_score = None, float("-inf")
    for row in history or []:
        score = row["nat_acc"] + row["rob_acc"]
        if score > best_score:
            best, best_score = row["epoch"], score
        records.append_jsonl(out / records.HISTORY, {"best_epoch": best, "score": score, "seconds": 100.0,
                                                     "train_seconds": 90.0, "train": {}, **row})
    if accuracies is not None:
        epochs = spec.config["schedule"]["epochs"]
        records.write_json(out / records.DONE, {"best_epoch": best or epochs, "best_score": best_score,
                                                "epochs": epochs, "selection": spec.config["selection"]["rule"],
                                                "mask_flag_epochs": []})
        n = n_examples or spec.n_examples or info.n_test
        records.write_json(out / records.EVAL, {
            "key": {"checkpoint": records.BEST, "epoch": best or epochs, "n_examples": n, "eps": info.test_eps},
            "attacks": {name: {"accuracy": acc / 100, "seconds": 1.0, "settings": _settings(
                name, eval_attack(info.family, name, info.test_eps), spec.config["seed"],
                clips(info.family, spec.config["protocol"]))} for name, acc in accuracies.items()},
            "flags": []})
    return out


@pytest.fixture
def write_run_records():
    """`_write_run_records`: fabricated records of a suite's run, for report tests that need chosen numbers."""
    return _write_run_records


def tree(root: Path) -> dict[str, tuple]:
    """Every entry under `root` (links not followed): its kind, and for a file its size, modification
    time and link target; what a write, a deletion or a new file changes (a folder's own time changes
    when a file is made and removed again, which leaves it holding what it held)."""
    entries = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            target = os.readlink(path) if path.is_symlink() else None
            entries[str(path.relative_to(root))] = ((st.st_mode,) if path.is_dir() and not path.is_symlink() else
                                                    (st.st_mode, st.st_size, st.st_mtime_ns, target))
    return entries


def changes(before: dict, after: dict) -> list[str]:
    """What differs between two `tree`s: new, removed and changed paths."""
    return ([f"new {p}" for p in sorted(after.keys() - before.keys())]
            + [f"removed {p}" for p in sorted(before.keys() - after.keys())]
            + [f"changed {p}" for p in sorted(before.keys() & after.keys()) if before[p] != after[p]])


@pytest.fixture(autouse=True)
def refusals_touch_nothing(tmp_path_factory, monkeypatch):
    """Every command of the test suite that cat-bench refuses (UsageError, exit status 2) leaves the test
    folders exactly as it found them: no lock, no empty folder, no half-written file, nothing deleted."""
    import cat_bench.cli

    dispatch = cat_bench.cli._dispatch
    root = tmp_path_factory.getbasetemp()

    def checked(args):
        from cat_bench.errors import UsageError

        before = tree(root)
        try:
            return dispatch(args)
        except UsageError:
            left = changes(before, tree(root))
            assert not left, f"the refused `cat-bench {args.command}` changed the test folders: {left[:10]}"
            raise

    monkeypatch.setattr(cat_bench.cli, "_dispatch", checked)
