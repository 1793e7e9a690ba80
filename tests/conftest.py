"""Shared pytest fixtures."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
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


def _write_pickle(path: Path, entry: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(entry, f)


@pytest.fixture
def synthetic_cifar(tmp_path, monkeypatch):
    """Factory writing small random CIFAR-10/100 data in the real on-disk layout; returns the data root.

    Files: cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta} or
    cifar-100-python/{train, test, meta}, pickled dicts with "data" uint8 [N, 3072] (R, G, B planes,
    row-major) and "labels" (CIFAR-10) or "fine_labels"/"coarse_labels" (CIFAR-100). Keys are str,
    which is what the real Python-2 pickles load as under torchvision's encoding="latin1".
    torchvision's md5 check is patched to an existence check, since random files cannot match.
    """
    import torchvision.datasets.cifar

    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity",
                        lambda fpath, md5=None: os.path.isfile(fpath))

    def make(name: str = "cifar10", n_train: int = 50, n_test: int = 20, seed: int = 0) -> Path:
        rng = np.random.default_rng(seed)
        root = tmp_path / f"{name}-data"

        def images(n):
            return rng.integers(0, 256, (n, 3072), dtype=np.uint8)

        if name == "cifar10":
            folder = root / "cifar-10-batches-py"
            folder.mkdir(parents=True)
            for i, part in enumerate(np.array_split(np.arange(n_train), 5), start=1):
                _write_pickle(folder / f"data_batch_{i}", {"batch_label": f"training batch {i} of 5",
                                                           "data": images(len(part)),
                                                           "labels": rng.integers(0, 10, len(part)).tolist()})
            _write_pickle(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "data": images(n_test),
                                                  "labels": rng.integers(0, 10, n_test).tolist()})
            _write_pickle(folder / "batches.meta", {"label_names": [f"class{c}" for c in range(10)]})
        elif name == "cifar100":
            folder = root / "cifar-100-python"
            folder.mkdir(parents=True)
            for split, n in (("train", n_train), ("test", n_test)):
                fine = rng.integers(0, 100, n)
                _write_pickle(folder / split, {"data": images(n), "fine_labels": fine.tolist(),
                                               "coarse_labels": (fine // 5).tolist()})
            _write_pickle(folder / "meta", {"fine_label_names": [f"fine{c}" for c in range(100)],
                                            "coarse_label_names": [f"coarse{c}" for c in range(20)]})
        else:
            raise ValueError(f"synthetic_cifar makes cifar10 or cifar100, not {name!r}")
        return root

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
    from cat_bench.presets import clips, eval_attack
    from cat_bench.train import config_sources

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
