"""Hour estimates for planning a suite (`cat-bench run --dry-run`) and for warning before a long CPU run.

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
- The sustained rate (TFLOP/s) of each network on each device kind is measured, not assumed: the
  committed records of `SOURCES` (benchmarks/throughput.py records: the fp32 cat-bench training rows;
  run directories: the median training images/s of their epochs times the step's counted FLOPs per
  image), condensed into the package asset `RATES` by `python scripts/throughput_rates.py` (a test
  checks the asset against the records). `Pricer` prices a network measured on the chosen kind at its
  rate; any other at the rate of the measured network of the same dataset family nearest in FLOPs per
  image (`ASSUMPTION_RULE`), saying so; `--gpu-tflops` replaces that rule by a fixed rate.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from cat_bench.data import dataset_info
from cat_bench.errors import UsageError
from cat_bench.lazy import torch
from cat_bench.methods import get_method
from cat_bench.models import build_classifier
from cat_bench.eval_attacks import eval_attack

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


def train_flops_per_image(config: dict) -> float:
    """Counted FLOPs of one training image's step: each network's passes (`Method.passes`) times its
    forward + backward."""
    ds, arch, method = config["dataset"], config["arch"], config["method"]
    passes = get_method(method).passes(config["train_attack"]["steps"], config["hparams"])
    per_image = passes["f"] * 3 * forward_flops(ds, arch)
    for net, n in passes.items():
        if net != "f":
            per_image += n * 3 * forward_flops(ds, arch, method, net)
    return per_image


def run_gpu_hours(config: dict, attacks, n_examples: int | None, tflops: float = DEFAULT_TFLOPS) -> float:
    """Estimated hours of training and evaluating one run at a sustained `tflops`."""
    ds, arch = config["dataset"], config["arch"]
    fb = 3 * forward_flops(ds, arch)  # forward + backward
    n_train = train_images(config)
    per_image = train_flops_per_image(config)
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


# ---------------------------------------------------------------------------------------------
# Measured rates per device kind

RATES = Path(__file__).parent / "assets" / "throughput.json"
# The committed measurements the rates come from (paths from the repository root): benchmark records
# and run directories, each on one device kind (read from the record).
SOURCES = (
    "results/gpu/throughput-preact-resnet18-h100.json",
    "results/gpu/throughput-preact-resnet18-h200.json",
    "results/gpu/throughput-wrn-34-10-h200.json",
    "results/gpu/table1-cat-cw-h100",
    "results/fidelity-rerun/runs/cat-cw-mnist-a213ca5433a6",
)
ASSUMPTION_RULE = ("a network not measured on the chosen kind takes, in this order: its own rate on another GPU "
                   "kind; the rate of the measured network of its dataset family nearest in FLOPs per image, on this "
                   "kind, then on another GPU kind; the nearest measured network of any family on this kind")


def device_kind(name: str) -> str:
    """A device's kind from its name: "h100", "h200", "a100", ... for a GPU, "cpu" for a CPU."""
    for kind in ("h100", "h200", "a100", "l40s", "v100"):
        if kind in name.lower():
            return kind
    return "cpu" if name == "cpu" else name.lower().replace(" ", "-")


def _run_rate(run_dir: Path) -> dict:
    """A run directory's measured rate: median training images/s over its epochs x counted FLOPs per image."""
    config = json.loads((run_dir / "config.json").read_text())
    identity, hardware = config["identity"], config["provenance"]["hardware"]
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines() if line.strip()]
    images_per_s = statistics.median(h["images_per_s"] for h in history)
    device = hardware.get("gpu") if hardware["device"] == "cuda" else "cpu"
    return {"kind": device_kind(device), "arch": identity["arch"], "dataset": identity["dataset"],
            "tflops": images_per_s * train_flops_per_image(identity) / 1e12,
            "device": device if device != "cpu" else f"{hardware['cpu']}, {hardware['threads']} threads",
            "how": f"median training images/s of {len(history)} epochs ({images_per_s:.1f}) x "
                   f"{train_flops_per_image(identity) / 1e9:.3g} GFLOP counted per image ({identity['method']})"}


def _benchmark_rate(path: Path) -> dict:
    record = json.loads(path.read_text())
    return {"kind": device_kind(record["device"]), "arch": record["arch"], "device": record["device"],
            "dataset": record["dataset"], "tflops": measured_tflops(path)[record["arch"]],
            "how": "benchmarks/throughput.py: mean of its fp32 cat-bench training rows"}


def rates_from_records(root: Path, sources=SOURCES) -> dict:
    """{kind: {arch: {"tflops", "dataset", "device", "source", "how"}}} from the committed records."""
    rates: dict[str, dict] = {}
    for source in sources:
        path = Path(root) / source
        rate = _run_rate(path) if path.is_dir() else _benchmark_rate(path)
        kind, arch = rate.pop("kind"), rate.pop("arch")
        rates.setdefault(kind, {})[arch] = {**rate, "source": source}
    return rates


def write_rates(root: Path) -> Path:
    """Condense the committed records into the package asset RATES (scripts/throughput_rates.py)."""
    from cat_bench.records import write_text

    write_text(RATES, json.dumps(rates_from_records(root), indent=2, sort_keys=True) + "\n")
    return RATES


def kinds() -> list[str]:
    """The device kinds with measured rates."""
    return sorted(json.loads(RATES.read_text()))


@dataclass(frozen=True)
class Rate:
    tflops: float
    basis: str  # "measured", "assumed"
    detail: str  # where it comes from


class Pricer:
    """Sustained TFLOP/s of each network on one device kind: measured (RATES, and `extra` benchmark records
    given on the command line), else assumed by ASSUMPTION_RULE, or at a fixed `assumed` rate when given."""

    def __init__(self, kind: str = "h100", extra: dict[str, float] | None = None, assumed: float | None = None):
        table = json.loads(RATES.read_text())
        if kind not in table:
            raise UsageError(f"--price-on {kind!r}: no measured rates for it; allowed: {', '.join(sorted(table))}")
        self.kind, self.assumed = kind, assumed
        # (kind, arch) -> (tflops, dataset or None, source)
        self.measured = {(k, arch): (r["tflops"], r["dataset"], f"{r['source']}, {r['device']}")
                         for k, rates in table.items() for arch, r in rates.items()}
        for arch, tflops in (extra or {}).items():
            self.measured[(kind, arch)] = (tflops, None, "--throughput")

    def rate(self, config: dict) -> Rate:
        arch = config["arch"]
        if (self.kind, arch) in self.measured:
            tflops, _, source = self.measured[(self.kind, arch)]
            return Rate(tflops, "measured", f"{arch}: {tflops:.3g} TFLOP/s measured on {self.kind} ({source})")
        if self.assumed is not None:
            return Rate(self.assumed, "assumed", f"{arch}: {self.assumed:g} TFLOP/s assumed (--gpu-tflops)")
        kind, other, why = self._stand_in(arch, config["dataset"])
        tflops = self.measured[(kind, other)][0]
        return Rate(tflops, "assumed", f"{arch}: {tflops:.3g} TFLOP/s assumed: {other}'s on {kind} ({why})")

    def _stand_in(self, arch: str, dataset: str) -> tuple[str, str, str]:
        """(kind, arch, why) of the measurement that prices an unmeasured network (ASSUMPTION_RULE)."""
        family, flops = dataset_info(dataset).family, forward_flops(dataset, arch)
        gpus = [] if self.kind == "cpu" else sorted({k for k, _ in self.measured if k not in (self.kind, "cpu")})
        known = [(k, a, d) for (k, a), (_, d, _) in self.measured.items() if d is not None]
        tiers = [([c for c in known if c[0] in gpus and c[1] == arch], "the same network on another GPU"),
                 ([c for c in known if c[0] == self.kind and dataset_info(c[2]).family == family],
                  "the nearest measured network of its family"),
                 ([c for c in known if c[0] in gpus and dataset_info(c[2]).family == family],
                  "the nearest measured network of its family, on another GPU"),
                 ([c for c in known if c[0] == self.kind], "the nearest measured network of any family")]
        for candidates, why in tiers:
            if candidates:
                k, a, d = min(candidates, key=lambda c: abs(math.log(forward_flops(c[2], c[1]) / flops)))
                return k, a, why
        raise UsageError(f"no network is measured on {self.kind}; give --gpu-tflops")
