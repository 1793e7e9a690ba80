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
