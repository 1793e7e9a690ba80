"""which change to CAT's released MNIST code keeps the mask off 0 and 1 from the start?

    python scripts/mask_variants.py run VARIANT [--batches 300] [--n-test 2000] [--seed 0] \
        [--data-root data-cache] [--out results/fidelity/variants]
    python scripts/mask_variants.py table [--out results/fidelity/variants]

`run` trains CATcw at eps_train 0.4 on full MNIST exactly as the `mnist-fidelity` suite's
released-code run does (Train_MNIST.py's protocol, Eq. 14 KL / B, the same seed, initialisation
and batch order), changed only by VARIANT, for the first `--batches` batches; it records the
mask (mean, spread over pixels) every 10 batches and, every `--measure-every` batches and at the
end, natural and PGD-20 accuracy (eps 0.3, step 0.015, no random start, no clip: the log's
measurement) on the first `--n-test` test digits. One JSON record per run, written atomically.
`table` prints the Markdown table of every record (results/fidelity/README.md quotes it).

These are experiments, not cat-bench options: none changes a run of `cat-bench train`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from cat_bench import records
from cat_bench.attacks import PGD
from cat_bench.data import TensorLoader, load_split
from cat_bench.evaluate import correct_under
from cat_bench.networks import Networks
from cat_bench.methods import CATcent
from cat_bench.config import resolve_config

VARIANTS = {
    "code": "the released code, unchanged (the reference: the mnist-fidelity run's first batches)",
    "g-warmup-100": "g is not stepped for the first 100 batches (f trains on x + M0 delta, M0 = g's initial mask, "
                    "about 0.5); from batch 101 on, the code",
    "g-head-zero": "g's last conv starts at zero weights and bias (M = 0.5 exactly on every pixel at batch 1)",
    "g-adam-reset-20": "g's Adam state (m, v, step count) is cleared after batch 20, once the mask has collapsed: "
                       "tests whether the stale second moment of the first steps is what holds g frozen",
}


class _NoStep:
    """An optimizer stand-in whose step does nothing (g's warm-up)."""

    def step(self):
        pass


def run(variant: str, batches: int, n_test: int, seed: int, measure_every: int, data_root, out: Path) -> Path:
    """Train the variant for `batches` batches; write and return its JSON record."""
    config = resolve_config("cat-cw", "mnist", 0.4, seed=seed)
    torch.manual_seed(seed)
    x_train, y_train = load_split("mnist", "train", data_root)
    x_test, y_test = load_split("mnist", "test", data_root)
    x_test, y_test = x_test[:n_test], y_test[:n_test]
    schedule = config["schedule"]
    loader = TensorLoader(x_train, y_train, schedule["batch_size"], "cpu", shuffle=True, augment="none", seed=seed)
    nets = Networks(config, torch.device("cpu"))
    if variant == "g-head-zero":
        torch.nn.init.zeros_(nets.extra["g"].head.weight)
        torch.nn.init.zeros_(nets.extra["g"].head.bias)
    method = nets.adapter()
    optimizers = {k: torch.optim.Adam(m.parameters(), lr=schedule["lr"]) for k, m in method.modules().items()}
    sel = config["selection"]["attack"]
    attack = PGD(eps=sel["eps"], alpha=sel["alpha"], steps=sel["steps"], loss=sel["loss"],
                 random_start=sel["random_start"], clip=sel["clip"])

    def measure(step: int) -> dict:
        nets.f.eval()
        nat = correct_under(nets.f, x_test, y_test, None, 100).float().mean().item()
        rob = correct_under(nets.f, x_test, y_test, attack, 100).float().mean().item()
        nets.f.train()
        return {"batches": step, "nat_acc": nat, "pgd20_acc": rob}

    trace, measures, began, step = [], [], time.time(), 0
    for epoch in range(math.ceil(batches / len(loader))):
        for x, y in loader.epoch(epoch):
            opts = dict(optimizers)
            if variant == "g-warmup-100" and step < 100:
                opts["g"] = _NoStep()
            losses = method.update(x, y, opts, epoch + 1)
            step += 1
            if variant == "g-adam-reset-20" and step == 20:
                optimizers["g"].state.clear()
            if (step - 1) % 10 == 0:
                mean, sq = losses["mask_mean"].item(), losses["mask_sq"].item()
                trace.append({"batch": step, "mask_mean": mean, "mask_std": math.sqrt(max(sq - mean ** 2, 0.0)),
                              "loss_f": losses["loss_f"].item(), "loss_g": losses["loss_g"].item()})
            if step % measure_every == 0 or step == batches:
                measures.append(measure(step))
            if step == batches:
                break
    record = {"variant": variant, "description": VARIANTS[variant], "seed": seed, "batches": batches,
              "n_test": n_test, "identity": config, "command": " ".join(["python"] + sys.argv),
              "seconds": time.time() - began, "provenance": records.provenance(torch.device("cpu")),
              "trace": trace, "measures": measures}
    path = out / f"{variant}-seed{seed}-{batches}.json"
    out.mkdir(parents=True, exist_ok=True)
    records.write_json(path, record)
    return path


def _episodes(trace: list[dict]) -> str:
    """Batch ranges where the traced mean mask was below 0.01 (collapsed) or above 0.99 (saturated)."""
    spans = CATcent.excursions([{**row, "epoch": 1} for row in trace])  # a variant's batches count from its first
    return "; ".join(f"{fate} {first[1]}-{last[1]}" for fate, first, last, _ in spans) or "none"


def table(out: Path) -> str:
    """One Markdown row per record and measurement point."""
    lines = ["| variant | seed | batches | test digits | natural | PGD-20 | mean mask at the end | mask off (0.01, 0.99) "
             "(traced batches) | seconds |", "|---|---|---|---|---|---|---|---|---|"]
    for path in sorted(out.glob("*.json")):
        r = json.loads(path.read_text())
        for m in r["measures"]:
            lines.append(f"| {r['variant']} | {r['seed']} | {m['batches']} | {r['n_test']} | "
                         f"{100 * m['nat_acc']:.1f} | {100 * m['pgd20_acc']:.1f} | {r['trace'][-1]['mask_mean']:.3g} | "
                         f"{_episodes(r['trace'])} | {r['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run")
    p_run.add_argument("variant", choices=sorted(VARIANTS))
    p_run.add_argument("--batches", type=int, default=300)
    p_run.add_argument("--measure-every", type=int, default=600)
    p_run.add_argument("--n-test", type=int, default=2000)
    p_run.add_argument("--seed", type=int, default=0)
    p_run.add_argument("--data-root", default=None)
    p_run.add_argument("--out", type=Path, default=Path("results/fidelity/variants"))
    p_table = sub.add_parser("table")
    p_table.add_argument("--out", type=Path, default=Path("results/fidelity/variants"))
    args = parser.parse_args()
    if args.command == "run":
        print(run(args.variant, args.batches, args.n_test, args.seed, args.measure_every, args.data_root, args.out))
    else:
        print(table(args.out), end="")
