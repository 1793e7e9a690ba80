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
