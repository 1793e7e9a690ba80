"""Standard AutoAttack through cat-bench beside pyautoattack's own `run_standard_evaluation`, side by side.

    python benchmarks/autoattack.py                        # CPU: a SmallCNN trained here, 200 mnist-mini digits
    python benchmarks/autoattack.py --model results/models/cat-cw-mnist-eps0.4-seed0 --n 100

The same model, the same digits, eps 0.3, seed 0: pyautoattack's reference (one `AutoAttack(...,
version="standard").run_standard_evaluation(x, y)` call, its sub-attacks on the points still robust)
against cat-bench's path (`cat_bench.attacks.run_autoattack`: one sub-attack at a time, so an
evaluation can be checkpointed and resumed after each), each timed, with both robust accuracies,
the examples on which they disagree, and the time ratio. Without --model, a SmallCNN is trained
naturally for 2 epochs on 1,000 digits (most digits fall to APGD-CE: the ratio then shows
cat-bench's overhead per sub-attack); a model folder (`cat-bench export`) measures a robust model.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from cat_bench import records, shipped
from cat_bench.attacks import run_autoattack
from cat_bench.data import load_split
from cat_bench.evaluate import AUTOATTACK_STANDARD
from cat_bench.models import build_classifier
from cat_bench.settings import Settings
from cat_bench.config import resolve_config
from cat_bench.train import train


def trained_here(tmp: Path) -> torch.nn.Module:
    config = resolve_config("natural", "mnist-mini", 0.3, epochs=2, n_train=1000, batch_size=50, select_n=100)
    train(config, tmp / "plain", Settings("cpu", progress=False), log=lambda m: None)
    f = build_classifier(config["arch"], 10, 1)
    f.load_state_dict(records.load_checkpoint(tmp / "plain" / records.BEST)["nets"]["f"])
    return f


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="a model folder (cat-bench export); default: a SmallCNN trained here")
    ap.add_argument("--n", type=int, default=200, help="test digits (default 200)")
    ap.add_argument("--batch-size", type=int, default=100, help="batch size of both (default 100)")
    args = ap.parse_args()
    device = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        if args.model is None:
            model = trained_here(Path(tmp))
        else:
            card = shipped.read_card(args.model)
            model = shipped.load_networks(args.model, card, device).f
        model.eval()
        x, y = load_split("mnist-mini", "test")
        x, y = x[: args.n].float() / 255, y[: args.n].long()

        from pyautoattack import AutoAttack

        began = time.time()
        reference = AutoAttack(model, norm="Linf", eps=0.3, version="standard", device=device, seed=0)
        _, y_ref = reference.run_standard_evaluation(x, y, batch_size=args.batch_size)
        t_ref = time.time() - began
        robust_ref = y_ref == y

        began = time.time()
        robust = run_autoattack(model, x, y, 0.3, AUTOATTACK_STANDARD, torch.ones(len(y), dtype=torch.bool),
                                batch_size=args.batch_size, seed=0, device=device,
                                on_attack_done=lambda name, flags: None)
        t_ours = time.time() - began
    print(f"AutoAttack (standard, Linf, eps 0.3) on {len(y)} mnist-mini digits, "
          f"{'a SmallCNN trained here' if args.model is None else args.model}, CPU, {torch.get_num_threads()} threads")
    print(f"pyautoattack run_standard_evaluation: robust {100 * robust_ref.float().mean():.2f}%, {t_ref:.1f} s")
    print(f"cat-bench run_autoattack:             robust {100 * robust.float().mean():.2f}%, {t_ours:.1f} s")
    print(f"time ratio cat-bench / pyautoattack: {t_ours / t_ref:.2f}; examples on which they disagree: "
          f"{int((robust != robust_ref).sum())}")


if __name__ == "__main__":
    main()
