"""Training and evaluation throughput, measured side by side in one run.

    python benchmarks/throughput.py                      # CPU: SmallCNN on mnist-mini
    python benchmarks/throughput.py --dataset cifar10 --synthetic --device cuda   # PreAct ResNet-18

Prints images/s of one training step of natural, AT and CAT (cat-cent) training with the paper's
preset (METHOD.md s3), and of PGD-20 evaluation (METHOD.md s4), then CAT's cost relative to
natural and AT training. On CUDA it also times CAT with bf16 autocast + channels_last off, and
prints the speed-up of the default fast path.
"""

from __future__ import annotations

import argparse
import time

import torch

from cat_bench.attacks import PGD
from cat_bench.data import TensorLoader, dataset_info, load_split
from cat_bench.evaluate import correct_under, default_batch_size
from cat_bench.methods import TrainAttack, get_method
from cat_bench.presets import eval_attack
from cat_bench.networks import Networks, resolve_device
from cat_bench.train import resolve_config


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_rate(method: str, dataset: str, eps: float, x, y, device, batches: int, fast: bool = True) -> float:
    """Images/s of `method.update` over `batches` batches (after one warm-up batch)."""
    config = resolve_config(method, dataset, eps, schedule="uniform")  # one network and batch for every method
    torch.manual_seed(0)
    nets = Networks(config, device)
    if not fast:
        for net in nets.all().values():
            net.to(memory_format=torch.contiguous_format)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if fast and device.type == "cuda" else None
    m = get_method(method)(nets.f, nets.g, config["hparams"], TrainAttack(**config["train_attack"]), autocast)
    opts = {k: torch.optim.SGD(v.parameters(), lr=0.01) for k, v in m.modules().items()}
    loader = TensorLoader(x, y, config["schedule"]["batch_size"], device, shuffle=True,
                          augment=config["schedule"]["augment"], seed=0)
    it = iter(loader.epoch(0))
    xb, yb = next(it)
    m.update(xb, yb, opts, 1)
    _sync(device)
    t0, n = time.perf_counter(), 0
    for _ in range(batches):
        try:
            xb, yb = next(it)
        except StopIteration:
            it = iter(loader.epoch(1))
            xb, yb = next(it)
        if fast and device.type == "cuda":
            xb = xb.contiguous(memory_format=torch.channels_last)
        m.update(xb, yb, opts, 1)
        n += len(yb)
    _sync(device)
    return n / (time.perf_counter() - t0)


def pgd20_rate(dataset: str, x, y, device, batch_size: int) -> float:
    """Images/s of PGD-20 evaluation (METHOD.md s4 preset) of an untrained classifier."""
    info = dataset_info(dataset)
    config = resolve_config("natural", dataset, info.test_eps)
    f = Networks(config, device).f.eval()
    p = eval_attack(info.family, "pgd20", info.test_eps)
    attack = PGD(eps=p.eps, alpha=p.alpha, steps=p.steps)
    xs, ys = x.to(device), y.to(device)
    correct_under(f, xs[:batch_size], ys[:batch_size], attack, batch_size)
    _sync(device)
    t0 = time.perf_counter()
    correct_under(f, xs, ys, attack, batch_size)
    _sync(device)
    return len(ys) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="mnist-mini")
    ap.add_argument("--synthetic", action="store_true", help="random CIFAR-shaped data instead of files on disk")
    ap.add_argument("--device")
    ap.add_argument("--batches", type=int, default=10)
    ap.add_argument("--eval-n", type=int, default=1000)
    args = ap.parse_args()
    device = resolve_device(args.device)
    info = dataset_info(args.dataset)
    if args.synthetic:
        g = torch.Generator().manual_seed(0)
        n = 4096
        x = torch.randint(0, 256, (n, *info.shape), dtype=torch.uint8, generator=g)
        y = torch.randint(0, info.num_classes, (n,), generator=g)
    else:
        x, y = load_split(args.dataset, "train")
    eps = info.test_eps
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, dataset {args.dataset}"
          f"{' (synthetic)' if args.synthetic else ''}, eps {eps:.4f}, {args.batches} batches per method")
    rates = {}
    for method in ("natural", "at", "cat-cent"):
        rates[method] = train_rate(method, args.dataset, eps, x, y, device, args.batches)
        print(f"train {method:<9} {rates[method]:9.1f} images/s")
    print(f"ratio CAT / natural time per image: {rates['natural'] / rates['cat-cent']:.2f}x")
    print(f"ratio CAT / AT time per image:      {rates['at'] / rates['cat-cent']:.2f}x")
    if device.type == "cuda":
        slow = train_rate("cat-cent", args.dataset, eps, x, y, device, args.batches, fast=False)
        print(f"train cat-cent fp32, no channels_last {slow:9.1f} images/s")
        print(f"ratio bf16+channels_last speed-up: {rates['cat-cent'] / slow:.2f}x")
    rate = pgd20_rate(args.dataset, x[: args.eval_n], y[: args.eval_n], device, default_batch_size(device))
    print(f"eval  PGD-20     {rate:9.1f} images/s")


if __name__ == "__main__":
    main()
