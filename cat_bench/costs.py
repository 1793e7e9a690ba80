"""GPU-hour estimates for planning a suite (`cat-bench run --dry-run`).

Where the numbers come from:
- FLOPs of one forward pass of each network are counted by `torch.utils.flop_counter` on one
  input of the dataset's shape (exact for convolutions and linear layers); a backward pass is
  counted as two forwards.
- Passes per image of each network follow each method's step (`Method.passes` in its adapter;
  docs/method.md s1 for CAT): the PGD steps plus the loss's forward/backward passes, and those of the
  networks a method adds (CAT's mask net g). Epochs and training-set size are each method's
  protocol (`max_steps` counted).
- Evaluation passes follow the attack presets (docs/method.md s4); AutoAttack and Square are
  estimated as if half the test set survives to the query-heavy sub-attacks.
- The sustained throughput is an assumption, 50 TFLOP/s by default (`--gpu-tflops`), unless a
  record of `benchmarks/throughput.py --record` is given (`--throughput FILE`): then each network
  it measured is priced at its measured rate (cat-bench's fp32 AT and CAT training steps: images/s
  times the step's counted FLOPs per image), and the others at the assumption.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from cat_bench.data import dataset_info
from cat_bench.lazy import torch
from cat_bench.methods import get_method
from cat_bench.models import build_classifier
from cat_bench.presets import eval_attack

DEFAULT_TFLOPS = 50.0
QUERY_ATTACKS = {"square": 5000 / 3 / 2, "autoattack": (100 + 9 * 100 + 9 * 100 + 5000 / 3) / 2}


@cache
def forward_flops(dataset: str, arch: str, method: str | None = None, net: str = "f") -> float:
    """FLOPs of one forward pass of one image through the classifier f, or through the network `net`
    that `method` adds (`Method.extra_networks`, e.g. CAT's mask net "g")."""
    from torch.utils.flop_counter import FlopCounterMode

    info = dataset_info(dataset)
    net = (build_classifier(arch, info.num_classes, info.shape[0], info.mean, info.std) if net == "f"
           else get_method(method).extra_networks(info.family, info.shape[0])[net]).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(torch.zeros(1, *info.shape))
    return float(counter.get_total_flops())


def train_images(config: dict) -> int:
    """Training images of one epoch: the protocol's split (less `train_skip`), or the first `n_train`."""
    ds = config["dataset"]
    available = dataset_info(ds).n_train - config["schedule"].get("train_skip", 0)
    return min(config["n_train"] or available, available)


def train_epochs(config: dict) -> float:
    """Epochs a run trains: the protocol's, or fewer when `max_steps` ends it first (Madry et al.'s 100k)."""
    s = config["schedule"]
    max_steps = s.get("max_steps")
    if max_steps is None:
        return s["epochs"]
    return min(s["epochs"], max_steps * s["batch_size"] / train_images(config))


def run_gpu_hours(config: dict, attacks, n_examples: int | None, tflops: float = DEFAULT_TFLOPS) -> float:
    """Estimated GPU-hours of training and evaluating one run."""
    ds, arch, method = config["dataset"], config["arch"], config["method"]
    fb = 3 * forward_flops(ds, arch)  # forward + backward
    n_train = train_images(config)
    passes = get_method(method).passes(config["train_attack"]["steps"], config["hparams"])
    per_image = passes["f"] * fb
    for net, n in passes.items():
        if net != "f":
            per_image += n * 3 * forward_flops(ds, arch, method, net)
    sel = config["selection"]
    n_sel = sel["n"] or dataset_info(ds).n_test
    epochs = train_epochs(config)
    flops = epochs * (n_train * per_image + n_sel * (sel["attack"]["steps"] + 1) * fb)
    n_eval = n_examples or dataset_info(ds).n_test
    for name in attacks:
        p = eval_attack(dataset_info(ds).family, name, dataset_info(ds).test_eps)
        passes = QUERY_ATTACKS.get(name, p.steps + 1 / 3)
        flops += n_eval * passes * fb
    return flops / (tflops * 1e12) / 3600


def measured_tflops(record_path: Path) -> dict[str, float]:
    """Sustained TFLOP/s per network from a `benchmarks/throughput.py --record` file: the mean over its
    fp32, uncompiled cat-bench training rows (images/s x counted FLOPs per image; the benchmark times AT
    and CAT)."""
    record = json.loads(Path(record_path).read_text())
    rates = [r["images_per_s"] * r["flops_per_image"] / 1e12 for r in record["rows"]
             if r.get("precision") == "fp32" and r.get("compile") is None and not r.get("reference")]
    return {record["arch"]: sum(rates) / len(rates)} if rates else {}
