"""Tests for datasets, loading and augmentation (cat_bench.data; docs/method.md s2-s3)."""

import importlib.util
import pickle
from pathlib import Path
from urllib.error import URLError

import numpy as np
import platformdirs
import pytest
import torch
import torch.nn.functional as F

from cat_bench.data import (DATASETS, TensorLoader, augment_batch, dataset_info, load_split, random_crop_flip,
                            random_rotate,
                            resolve_data_root, split_train_val)
from cat_bench.errors import UsageError

from conftest import SHARED_MNIST_RAW

REPO = Path(__file__).resolve().parents[1]
ASSET = REPO / "cat_bench" / "assets" / "mnist_mini.npz"


def load_script():
    """scripts/make_mnist_mini.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("make_mnist_mini", REPO / "scripts" / "make_mnist_mini.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_pickle(path):
    """One pickled CIFAR batch file as torchvision reads it."""
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def test_registry():
    """The four datasets, with docs/method.md s2 normalization and s4 test eps."""
    assert set(DATASETS) == {"mnist", "mnist-mini", "cifar10", "cifar100"}
    assert dataset_info("mnist").mean is None and dataset_info("mnist").test_eps == 0.3
    assert dataset_info("mnist-mini").shape == (1, 28, 28) and dataset_info("mnist-mini").family == "mnist"
    assert dataset_info("cifar10").std == (0.2471, 0.2435, 0.2616) and dataset_info("cifar10").test_eps == 8 / 255
    assert dataset_info("cifar100").num_classes == 100 and dataset_info("cifar100").family == "cifar"


def test_unknown_dataset_and_split():
    """Unknown names are UsageErrors naming the bad value and the allowed ones."""
    with pytest.raises(UsageError, match="'imagenet'.*mnist-mini"):
        dataset_info("imagenet")
    with pytest.raises(UsageError, match="'imagenet'"):
        load_split("imagenet", "train")
    with pytest.raises(UsageError, match="'validation'.*train, test"):
        load_split("mnist-mini", "validation")


def test_resolve_data_root(monkeypatch, tmp_path):
    """Argument first, then $CAT_BENCH_DATA, then a user cache dir."""
    monkeypatch.setenv("CAT_BENCH_DATA", str(tmp_path / "env"))
    assert resolve_data_root(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_root() == tmp_path / "env"
    monkeypatch.delenv("CAT_BENCH_DATA")
    assert resolve_data_root() == Path(platformdirs.user_cache_dir("cat-bench")) / "data"


def test_mnist_mini_offline():
    """The packaged subset: shapes, dtypes, 1000/200 per class, asset at most 3 MB."""
    assert ASSET.stat().st_size <= 3 * 2**20
    for split, per_class in (("train", 1000), ("test", 200)):
        x, y = load_split("mnist-mini", split, data_root="/nonexistent", download=False)
        assert x.shape == (10 * per_class, 1, 28, 28) and x.dtype == torch.uint8
        assert y.dtype == torch.int64 and torch.equal(torch.bincount(y, minlength=10), torch.full((10,), per_class))
        assert x.max() == 255 and x.min() == 0


def test_mnist_mini_script_reproduces_asset():
    """scripts/make_mnist_mini.py rebuilds exactly the shipped arrays from the original MNIST files."""
    script = load_script()
    if not all((SHARED_MNIST_RAW / name).is_file() for name in script.RAW_FILES):
        pytest.skip(f"the original MNIST files are not in {SHARED_MNIST_RAW}")
    rebuilt = script.build_arrays(SHARED_MNIST_RAW)
    with np.load(ASSET) as npz:
        shipped = {name: npz[name] for name in npz.files}
    assert list(rebuilt) == list(script.ARRAYS) and set(shipped) == set(script.ARRAYS)
    for name in script.ARRAYS:
        assert rebuilt[name].dtype == shipped[name].dtype
        np.testing.assert_array_equal(rebuilt[name], shipped[name])
    assert script.arrays_sha256(rebuilt) == script.arrays_sha256(shipped)
    assert np.all(np.diff(rebuilt["train_index"]) > 0) and rebuilt["test_index"].max() < 10000


def test_mnist_through_torchvision(mnist_root):
    """Full MNIST loads through torchvision from copied .gz files, without network."""
    x, y = load_split("mnist", "train", mnist_root)
    assert x.shape == (60000, 1, 28, 28) and x.dtype == torch.uint8 and y.dtype == torch.int64
    x_test, y_test = load_split("mnist", "test", mnist_root, download=False)  # unpacked by the call above
    assert x_test.shape == (10000, 1, 28, 28) and len(y_test) == 10000
    with np.load(ASSET) as npz:  # mnist-mini is a subset of exactly these images
        np.testing.assert_array_equal(x[torch.from_numpy(npz["train_index"]).long(), 0].numpy(), npz["x_train"])
        np.testing.assert_array_equal(y_test[torch.from_numpy(npz["test_index"]).long()].numpy(), npz["y_test"])


@pytest.mark.parametrize(("name", "files", "label_key"), [
    ("cifar10", {"train": [f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)],
                 "test": ["cifar-10-batches-py/test_batch"]}, "labels"),
    ("cifar100", {"train": ["cifar-100-python/train"], "test": ["cifar-100-python/test"]}, "fine_labels"),
])
def test_cifar_through_torchvision(synthetic_cifar, name, files, label_key):
    """CIFAR loads through torchvision as uint8 [N, 3, 32, 32] with the labels that were written."""
    root = synthetic_cifar(name, n_train=53, n_test=17)
    for split, n in (("train", 53), ("test", 17)):
        x, y = load_split(name, split, root, download=False)
        assert x.shape == (n, 3, 32, 32) and x.dtype == torch.uint8 and x.is_contiguous()
        assert y.dtype == torch.int64
        entries = [read_pickle(root / f) for f in files[split]]
        expect_x = np.concatenate([e["data"] for e in entries]).reshape(-1, 3, 32, 32)  # R, G, B planes
        expect_y = np.concatenate([e[label_key] for e in entries])
        np.testing.assert_array_equal(x.numpy(), expect_x)
        np.testing.assert_array_equal(y.numpy(), expect_y)


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100"])
def test_missing_data_is_a_usage_error(tmp_path, name):
    """Absent files with downloads disabled: a UsageError naming the dataset, the root and the fixes."""
    with pytest.raises(UsageError) as info:
        load_split(name, "train", tmp_path, download=False)
    msg = str(info.value)
    assert name in msg and str(tmp_path) in msg and "CAT_BENCH_DATA" in msg and "mnist-mini" in msg
    assert isinstance(info.value.__cause__, Exception)


@pytest.mark.parametrize(("name", "module"), [("mnist", "mnist"), ("cifar10", "cifar"), ("cifar100", "cifar")])
def test_failed_download_is_a_usage_error(tmp_path, monkeypatch, name, module):
    """A download that fails (no network) gives the same clear error, chained to the cause."""
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(getattr(torchvision.datasets, module), "download_and_extract_archive", offline)
    (tmp_path / "mine.txt").write_text("the user's own file")
    with pytest.raises(UsageError, match="could not be downloaded") as info:
        load_split(name, "test", tmp_path)
    msg = str(info.value)
    assert name in msg and str(tmp_path) in msg and "--data-root" in msg
    assert info.value.__cause__ is not None
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["mine.txt"]  # no empty MNIST/raw
    with pytest.raises(UsageError, match="could not be downloaded"):
        load_split(name, "test", tmp_path / "new" / "root")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["mine.txt"]  # no empty new/ parent either


def candidates(x, padding=4):
    """Every crop and every flipped crop of each padded example: [N, 2 * (2p+1)^2, C, H, W]."""
    n, c, h, w = x.shape
    crops = F.pad(x, (padding,) * 4).unfold(2, h, 1).unfold(3, w, 1)  # [N, C, 2p+1, 2p+1, H, W]
    crops = crops.permute(0, 2, 3, 1, 4, 5).reshape(n, -1, c, h, w)
    return torch.cat([crops, crops.flip(-1)], dim=1)


def test_random_crop_flip():
    """Shape kept; deterministic per generator seed; each output is one crop or flipped crop, of all kinds."""
    x = torch.randint(1, 256, (64, 3, 32, 32), dtype=torch.uint8)
    out = random_crop_flip(x, torch.Generator().manual_seed(5))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(out, random_crop_flip(x, torch.Generator().manual_seed(5)))
    assert not torch.equal(out, random_crop_flip(x, torch.Generator().manual_seed(6)))
    match = (candidates(x) == out.unsqueeze(1)).flatten(2).all(-1)  # [N, 162]
    assert torch.equal(match.sum(1), torch.ones(64, dtype=torch.long))  # exactly one candidate each
    which = match.float().argmax(1)
    flipped, offset = which >= 81, which % 81
    assert 0 < flipped.sum() < 64
    assert len(torch.unique(offset)) > 20 and (offset != 40).any()  # 40 = centre, no shift
    floats = random_crop_flip(x.float() / 255, torch.Generator().manual_seed(5))
    assert torch.allclose(floats * 255, out.float())


def test_reflect_padded_crop_matches_cifar10_fast():
    """mode="reflect": each output is a crop (or flipped crop) of np.pad(..., mode="reflect"), as the
    CAT and robust_overfitting scripts' utils.pad; zero padding would put zeros at the borders."""
    x = torch.randint(1, 256, (32, 3, 32, 32), dtype=torch.uint8)
    out = random_crop_flip(x, torch.Generator().manual_seed(5), mode="reflect")
    padded = torch.from_numpy(np.pad(x.numpy(), [(0, 0), (0, 0), (4, 4), (4, 4)], mode="reflect"))
    crops = padded.unfold(2, 32, 1).unfold(3, 32, 1).permute(0, 2, 3, 1, 4, 5).reshape(32, -1, 3, 32, 32)
    crops = torch.cat([crops, crops.flip(-1)], dim=1)
    assert torch.equal((crops == out.unsqueeze(1)).flatten(2).all(-1).sum(1) >= 1, torch.ones(32, dtype=torch.bool))
    assert (out > 0).all()  # x has no zero pixel, and reflection adds none


def test_rotation_augmentation():
    """random_rotate (train_cifar100.py's RandomRotation(15)): per-example angles within 15 degrees,
    nearest neighbour (no new pixel values), zeros where the rotated image leaves the frame."""
    x = torch.randint(1, 256, (64, 3, 32, 32), dtype=torch.uint8)
    out = random_rotate(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == torch.uint8
    zeros = (out[:, 0] == 0).flatten(1).sum(1)
    assert (zeros > 0).float().mean() > 0.8 and len(torch.unique(zeros)) > 10  # angles differ per example
    assert zeros.max() < 0.15 * 32 * 32  # at most 15 degrees: a thin border, not a half-turned image
    values = set(x[:, 0].unique().tolist()) | {0}
    assert set(out[:, 0].unique().tolist()) <= values  # nearest neighbour
    assert torch.equal(augment_batch(x, torch.Generator(), "none"), x)


def make_loader(n=103, batch_size=16, **kwargs):
    """A loader over n random CIFAR-shaped images whose label is their index."""
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    kwargs = {"shuffle": True, "augment": "crop-flip", "seed": 3, **kwargs}
    return x, TensorLoader(x, torch.arange(n), batch_size, "cpu", **kwargs)


def test_tensor_loader_deterministic_per_epoch():
    """Same (seed, epoch): same batches; another epoch or seed: different batches."""
    _, a = make_loader()
    _, b = make_loader()

    def batches(loader, epoch):
        return list(loader.epoch(epoch))

    first = batches(a, 2)
    list(b.epoch(0))  # consuming other epochs first changes nothing (no hidden RNG state)
    for (xa, ya), (xb, yb) in zip(first, batches(b, 2), strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(torch.cat([y for _, y in first]), torch.cat([y for _, y in batches(a, 3)]))
    _, c = make_loader(seed=4)
    assert not torch.equal(torch.cat([y for _, y in first]), torch.cat([y for _, y in batches(c, 2)]))


def test_tensor_loader_covers_epoch():
    """Every example exactly once per epoch, float32 in [0, 1], int64 labels, len = batches."""
    x, loader = make_loader()
    got = list(loader.epoch(0))
    assert len(loader) == len(got) == 7 and [len(y) for _, y in got] == [16] * 6 + [7]
    y = torch.cat([y for _, y in got])
    assert torch.equal(y.sort().values, torch.arange(103)) and y.dtype == torch.int64
    xs = torch.cat([x for x, _ in got])
    assert xs.dtype == torch.float32 and xs.min() >= 0 and xs.max() <= 1
    _, plain = make_loader(shuffle=False, augment="none")
    xp, yp = next(iter(plain.epoch(0)))
    assert torch.equal(yp, torch.arange(16)) and torch.equal(xp, x[:16].float() / 255)
    _, dropped = make_loader(drop_last=True)
    assert len(dropped) == 6 and sum(len(y) for _, y in dropped.epoch(0)) == 96


def test_split_train_val():
    """Disjoint, complete, of the asked sizes, seeded."""
    train, val = split_train_val(1000, 100, seed=0)
    assert len(train) == 900 and len(val) == 100
    assert torch.equal(torch.cat([train, val]).sort().values, torch.arange(1000))
    again, val_again = split_train_val(1000, 100, seed=0)
    assert torch.equal(train, again) and torch.equal(val, val_again)
    assert not torch.equal(val, split_train_val(1000, 100, seed=1)[1])
    with pytest.raises(UsageError, match="1000"):
        split_train_val(1000, 1000, seed=0)
