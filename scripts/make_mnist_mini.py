"""Rebuild cat_bench/assets/mnist_mini.npz, the class-balanced MNIST subset shipped with cat-bench.

From the original MNIST files: 1000 training images per class from the original training set and
200 test images per class from the original test set, drawn with numpy default_rng(0), indices
sorted. torchvision reads the files (and checks their md5) from a temporary copy, so the source
folder is only read and no network is needed. Prints the sha256 of the arrays so a rebuild is
checkable against the shipped asset.

    python scripts/make_mnist_mini.py [--raw-dir DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RAW_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
PER_CLASS = {"train": 1000, "test": 200}
ARRAYS = ("x_train", "y_train", "x_test", "y_test", "train_index", "test_index")  # saved and hashed in this order


def build_arrays(raw_dir: Path) -> dict[str, np.ndarray]:
    """The subset's arrays (see ARRAYS), read through torchvision from a temp copy of raw_dir's .gz files."""
    from torchvision.datasets import MNIST

    rng = np.random.default_rng(0)
    arrays = {}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "MNIST" / "raw").mkdir(parents=True)
        for name in RAW_FILES:
            shutil.copy(Path(raw_dir) / name, Path(tmp) / "MNIST" / "raw" / name)
        for split, per_class in PER_CLASS.items():
            ds = MNIST(tmp, train=split == "train", download=True)
            labels = ds.targets.numpy()
            index = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
                                            for c in range(10)]))
            arrays[f"x_{split}"] = ds.data.numpy()[index].astype(np.uint8)
            arrays[f"y_{split}"] = labels[index].astype(np.uint8)
            arrays[f"{split}_index"] = index.astype(np.int32)
    return {name: arrays[name] for name in ARRAYS}


def arrays_sha256(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over the raw bytes of the arrays in ARRAYS order (independent of zip metadata)."""
    digest = hashlib.sha256()
    for name in ARRAYS:
        digest.update(np.ascontiguousarray(arrays[name]).tobytes())
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> None:
    """Build the arrays, write them compressed to --out, print size and sha256."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--raw-dir", type=Path, default=REPO.parent / "shared" / "data" / "MNIST" / "raw",
                    help="folder holding the four original MNIST .gz files (only read)")
    ap.add_argument("--out", type=Path, default=REPO / "cat_bench" / "assets" / "mnist_mini.npz")
    args = ap.parse_args(argv)
    arrays = build_arrays(args.raw_dir)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes): "
          + ", ".join(f"{k} {v.dtype}{list(v.shape)}" for k, v in arrays.items()))
    print(f"arrays sha256 {arrays_sha256(arrays)}")


if __name__ == "__main__":
    main()
