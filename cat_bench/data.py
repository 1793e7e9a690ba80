"""Datasets, in-memory loading and batched augmentation (docs/method.md s2-s3).

Every split is loaded once into memory as a uint8 tensor [N, C, H, W] plus int64 labels.
`TensorLoader` batches those tensors on the training device (on CUDA the whole dataset lives on
the GPU as uint8) and does the CIFAR augmentation there, batched; batch order and augmentation
depend only on (seed, epoch), so a resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import platformdirs

from cat_bench import records
from cat_bench.errors import UsageError
from cat_bench.lazy import F, torch

SPLITS = ("train", "test")


@dataclass(frozen=True)
class DatasetInfo:
    """What the rest of cat-bench needs to know about a dataset."""

    name: str
    family: str  # "mnist" or "cifar": picks architectures, schedules, attacks and hyperparameters
    num_classes: int
    shape: tuple[int, int, int]  # (C, H, W)
    mean: tuple[float, ...] | None  # per-channel normalization inside the classifier; None = none
    std: tuple[float, ...] | None
    test_eps: float  # L-inf radius of the paper's evaluation (docs/method.md s4)
    n_test: int  # size of the test split (a suite's evaluation without n_examples uses all of it)
    n_train: int  # size of the training split (`--n-train` takes at most this many, less the protocol's skip)
    description: str
    protocols: str = ""  # the dataset whose official scripts' protocols it trains with (default: its own)

    def __post_init__(self):
        if not self.protocols:
            object.__setattr__(self, "protocols", self.name)


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        name="mnist", family="mnist", num_classes=10, shape=(1, 28, 28), mean=None, std=None, test_eps=0.3,
        n_test=10000, n_train=60000, description="MNIST, 60000 train / 10000 test 28x28 grey digits (torchvision, under the data root); "
                    "no input normalization (docs/method.md s2), test eps 0.3",
    ),
    "mnist-mini": DatasetInfo(
        name="mnist-mini", family="mnist", num_classes=10, shape=(1, 28, 28), mean=None, std=None, test_eps=0.3,
        n_test=2000, n_train=10000, description="class-balanced MNIST subset shipped with cat-bench, 10000 train (1000 a class) / 2000 test "
                    "(200 a class); works offline, for smoke runs (scripts/make_mnist_mini.py rebuilds it)",
        protocols="mnist",
    ),
    "cifar10": DatasetInfo(
        name="cifar10", family="cifar", num_classes=10, shape=(3, 32, 32),
        mean=(0.4914, 0.4822, 0.4465), std=(0.2471, 0.2435, 0.2616), test_eps=8 / 255, n_test=10000, n_train=50000,
        description="CIFAR-10, 50000 train / 10000 test 32x32 colour images (torchvision, under the data root); "
                    "normalization inside the model (docs/method.md s2), test eps 8/255",
    ),
    "cifar100": DatasetInfo(
        # CIFAR-100's channel statistics as both official scripts write them (CAT's Codes/utils.py
        # cifar100_mean/std, robust_overfitting's train_cifar100.py CIFAR100_MEAN/STD).
        name="cifar100", family="cifar", num_classes=100, shape=(3, 32, 32),
        mean=(0.5070751592371323, 0.48654887331495095, 0.4409178433670343),
        std=(0.2673342858792401, 0.2564384629170883, 0.27615047132568404), test_eps=8 / 255,
        n_test=10000, n_train=50000,
        description="CIFAR-100 (fine labels), 50000 train / 10000 test 32x32 colour images (torchvision, under "
                    "the data root); test eps 8/255",
    ),
}

# How to put each torchvision dataset in place by hand, relative to the data root.
_PROVIDE = {
    "mnist": "copy the four MNIST .gz files (train-images-idx3-ubyte.gz, ...) into {root}/MNIST/raw "
             "(they are unpacked there, without network, on the next run with downloads allowed)",
    "cifar10": "unpack cifar-10-python.tar.gz so that {root}/cifar-10-batches-py holds data_batch_1..5, "
               "test_batch and batches.meta",
    "cifar100": "unpack cifar-100-python.tar.gz so that {root}/cifar-100-python holds train, test and meta",
}


def dataset_info(name: str) -> DatasetInfo:
    """The `DatasetInfo` of a dataset name; UsageError naming the allowed names if unknown."""
    try:
        return DATASETS[name]
    except KeyError:
        raise UsageError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}") from None


def resolve_data_root(data_root: str | os.PathLike | None = None) -> Path:
    """Where torchvision datasets live: the argument, else $CAT_BENCH_DATA, else the user cache dir."""
    if data_root is None:
        data_root = os.environ.get("CAT_BENCH_DATA") or Path(platformdirs.user_cache_dir("cat-bench")) / "data"
    return Path(data_root).expanduser()


def load_split(name: str, split: str, data_root: str | os.PathLike | None = None,
               download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """One split in memory: (x uint8 [N, C, H, W], y int64 [N]).

    mnist, cifar10 and cifar100 come through torchvision under `resolve_data_root(data_root)`
    (downloaded there if `download` and missing); mnist-mini comes from the package asset.
    Missing data, or a failed download, raises UsageError saying where it looked and how to fix it.
    """
    info = dataset_info(name)
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r} of {name}; allowed: {', '.join(SPLITS)}")
    if name == "mnist-mini":
        return _load_mnist_mini(split)

    import torchvision.datasets as tvd  # deferred: torchvision's import is slow and mnist-mini does not need it

    root = resolve_data_root(data_root)
    cls = {"mnist": tvd.MNIST, "cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}[name]
    before, made = _paths_under(root), records.missing_folders(root)
    try:
        ds = cls(root, train=split == "train", download=download)
    except Exception as err:
        _remove_new_paths(root, before, made)  # a failed download leaves nothing (empty MNIST/raw, partial files)
        what = "could not be downloaded" if download else "not found (downloads disabled)"
        raise UsageError(
            f"dataset {name} ({split} split) {what} under data root {root}: {err}. "
            f"To provide it: {_PROVIDE[name].format(root=root)}; or pass --data-root DIR / set CAT_BENCH_DATA "
            f"to a folder that already holds it; or use mnist-mini, which ships with cat-bench and needs no download."
        ) from err
    x = torch.as_tensor(ds.data)  # MNIST: uint8 [N, H, W]; CIFAR: uint8 numpy [N, H, W, C]
    x = x.unsqueeze(1) if info.family == "mnist" else x.permute(0, 3, 1, 2)
    y = torch.as_tensor(ds.targets, dtype=torch.int64)
    return x.contiguous(), y


def _paths_under(root: Path) -> set[Path] | None:
    """The entries directly under `root` (None when `root` does not exist yet); top level only, so a
    large shared data root is not walked."""
    return set(root.iterdir()) if root.is_dir() else None


def _remove_new_paths(root: Path, before: set[Path] | None, made: list[Path]) -> None:
    """Remove the entries that appeared directly under `root` since `_paths_under`, and `root` and its
    parents that `made` lists as new (each only while empty, so nothing another process put there goes)."""
    if not root.is_dir():
        return
    if before is None:
        shutil.rmtree(root, ignore_errors=True)
        records.remove_empty(made[1:])
        return
    for path in set(root.iterdir()) - before:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _load_mnist_mini(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The packaged class-balanced MNIST subset (built by scripts/make_mnist_mini.py)."""
    with resources.as_file(resources.files("cat_bench") / "assets" / "mnist_mini.npz") as path, np.load(path) as npz:
        x = torch.from_numpy(npz[f"x_{split}"]).unsqueeze(1)
        y = torch.from_numpy(npz[f"y_{split}"]).to(torch.int64)
    return x.contiguous(), y


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, padding: int = 4,
                     mode: str = "constant") -> torch.Tensor:
    """CIFAR augmentation of a batch (docs/method.md s3), done on x's device without a loop over examples.

    Each example is padded by `padding` pixels on every side (`mode` "constant": zeros, as
    torchvision's RandomCrop(32, padding=4) in the TRADES, MART and FAT scripts; "reflect": as
    cifar10-fast's utils.pad in the CAT and robust_overfitting scripts), cropped back to its size at
    a random offset, and flipped horizontally with probability 0.5; offsets and flips are drawn per
    example from `generator` (on x's device). Works on any dtype, e.g. uint8 images.
    """
    n, c, h, w = x.shape
    dev = x.device
    if mode == "reflect":  # F.pad's reflect needs floats
        padded = F.pad(x.float(), (padding, padding, padding, padding), mode="reflect").to(x.dtype)
    else:
        padded = F.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator, device=dev)
    dx = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator, device=dev)
    flip = torch.rand(n, 1, generator=generator, device=dev) < 0.5
    cols = torch.arange(w, device=dev)
    rows = dy + torch.arange(h, device=dev)  # [n, h]
    cols = dx + torch.where(flip, w - 1 - cols, cols)  # [n, w], reversed for flipped examples
    return padded[torch.arange(n, device=dev).view(n, 1, 1, 1), torch.arange(c, device=dev).view(1, c, 1, 1),
                  rows.view(n, 1, h, 1), cols.view(n, 1, 1, w)]


def random_rotate(x: torch.Tensor, generator: torch.Generator, degrees: float = 15.0) -> torch.Tensor:
    """Rotate each image about its centre by an angle drawn uniformly from [-degrees, degrees], nearest
    neighbour, zeros outside: torchvision's RandomRotation(15) defaults, per example and batched."""
    n = len(x)
    angle = (torch.rand(n, generator=generator, device=x.device) * 2 - 1) * math.radians(degrees)
    cos, sin = torch.cos(angle), torch.sin(angle)
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False).to(x.dtype)


def augment_batch(x: torch.Tensor, generator: torch.Generator, augment: str) -> torch.Tensor:
    """A protocol's training augmentation (methods.base.AUGMENTATIONS) of a uint8 or float batch."""
    if augment == "none":
        return x
    if augment == "crop-flip-reflect":
        return random_crop_flip(x, generator, mode="reflect")
    x = random_crop_flip(x, generator)
    return random_rotate(x, generator) if augment == "crop-flip-rotate15" else x


class TensorLoader:
    """Mini-batches from in-memory tensors held on `device`, reproducible per (seed, epoch).

    Each epoch uses its own torch.Generator on the device, seeded from (seed, epoch) only, for
    the shuffle and the augmentation (`augment_batch`), and no global RNG, so epoch k yields
    the same batches whether or not the run was interrupted and resumed before it.
    """

    def __init__(self, x_uint8: torch.Tensor, y: torch.Tensor, batch_size: int, device: torch.device | str,
                 shuffle: bool, augment: str, seed: int, drop_last: bool = False):
        """Move the uint8 images and int64 labels to `device` once; batches are cut from them there."""
        if len(x_uint8) != len(y):
            raise ValueError(f"{len(x_uint8)} images but {len(y)} labels")
        if batch_size < 1:
            raise UsageError(f"batch size must be at least 1, got {batch_size}")
        self.device = torch.device(device)
        self.x = x_uint8.to(self.device)
        self.y = y.to(self.device, torch.int64)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.seed = seed
        self.drop_last = drop_last

    def __len__(self) -> int:
        """Batches per epoch."""
        n = len(self.y)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of one epoch: float32 x in [0, 1] and int64 y, on the device."""
        generator = torch.Generator(device=self.device)
        generator.manual_seed(int(np.random.SeedSequence([self.seed, epoch]).generate_state(1, np.uint64)[0]))
        n = len(self.y)
        if self.shuffle:
            order = torch.randperm(n, generator=generator, device=self.device)
        else:
            order = torch.arange(n, device=self.device)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            x = self.x[idx]
            x = augment_batch(x, generator, self.augment)
            yield x.float().div_(255), self.y[idx]


def split_train_val(n: int, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded disjoint (train_idx, val_idx), each sorted, for checkpoint selection on held-out data.

    The paper selects on the test set (docs/method.md s3, Appendix C); this split lets a run select on
    a validation set carved from the training set instead.
    """
    if not 0 < val_size < n:
        raise UsageError(f"validation size must be between 1 and {n - 1} (of {n} training examples), got {val_size}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[val_size:].sort().values, perm[:val_size].sort().values
