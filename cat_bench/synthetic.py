"""Random CIFAR-10/100 data in the real on-disk layout, for checking the CIFAR code paths offline.

`write_cifar` makes the files torchvision's CIFAR10/CIFAR100 read; `unverified_cifar` lets
torchvision load them (their MD5 sums cannot match the real archives'). The numbers a run makes on
such data say nothing about CIFAR: the test suite and `cat-bench doctor` use them to run the
pipeline, never to report a result.
"""

from __future__ import annotations

import contextlib
import os
import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np


def _write_pickle(path: Path, entry: dict) -> None:
    with open(path, "wb") as fh:
        pickle.dump(entry, fh)


def write_cifar(root: Path, name: str = "cifar10", n_train: int = 50, n_test: int = 20, seed: int = 0) -> Path:
    """Write random `name` data (cifar10 or cifar100) under `root`; returns `root`, a data root.

    Files: cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta} or
    cifar-100-python/{train, test, meta}, pickled dicts with "data" uint8 [N, 3072] (R, G, B planes,
    row-major) and "labels" (CIFAR-10) or "fine_labels"/"coarse_labels" (CIFAR-100), str keys as the
    real Python-2 pickles load under torchvision's encoding="latin1".
    """
    rng = np.random.default_rng(seed)
    root = Path(root)

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
        raise ValueError(f"write_cifar makes cifar10 or cifar100, not {name!r}")
    return root


@contextlib.contextmanager
def unverified_cifar() -> Iterator[None]:
    """Inside: torchvision's CIFAR integrity check is an existence check, so `write_cifar`'s files load."""
    import torchvision.datasets.cifar as cifar

    original = cifar.check_integrity
    cifar.check_integrity = lambda fpath, md5=None: os.path.isfile(fpath)
    try:
        yield
    finally:
        cifar.check_integrity = original
