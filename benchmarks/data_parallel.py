"""One run's training speed in one process and as a data-parallel group, side by side.

    python benchmarks/data_parallel.py                    # CPU: CATcent, SmallCNN, mnist-mini, 1 vs 2 ranks
    python benchmarks/data_parallel.py --device cuda --dataset cifar10 --synthetic --nproc 4

Trains the same epoch of the same config (CAT's uniform protocol) with 1 process and with
`--nproc` ranks (`cat_bench.train.train_group`), and prints each one's images/s from its history
(the epoch's training time, without process start-up or the selection evaluation) and the ratio.
On CPU the ranks share the machine's cores (each takes cores / nproc threads), so the ratio says
what the group costs there; on GPUs, each rank has its own.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch

from cat_bench import records
from cat_bench.networks import resolve_device
from cat_bench.settings import Settings
from cat_bench.config import resolve_config
from cat_bench.train import train, train_group


def images_per_s(out: Path) -> float:
    return records.read_jsonl(out / records.HISTORY)[0]["images_per_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="cat-cent", help="method (default cat-cent)")
    ap.add_argument("--dataset", default="mnist-mini", help="mnist-mini (default), mnist, cifar10, cifar100")
    ap.add_argument("--device", help="cpu, cuda (default: cuda when available)")
    ap.add_argument("--nproc", type=int, default=2, help="ranks of the group (default 2)")
    ap.add_argument("--n-train", type=int, default=2000, help="training images of the timed epoch (default 2000)")
    ap.add_argument("--data-root", help="dataset root for mnist / cifar")
    args = ap.parse_args()
    device = resolve_device(args.device)
    config = resolve_config(args.method, args.dataset, 0.3 if args.dataset.startswith("mnist") else 8 / 255,
                            schedule="uniform", epochs=1, n_train=args.n_train, select_n=100)
    settings = Settings(str(device), data_root=args.data_root, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        train(config, Path(tmp) / "one", settings, log=lambda m: None)
        train_group(config, Path(tmp) / "group", args.nproc, settings)
        one, group = images_per_s(Path(tmp) / "one"), images_per_s(Path(tmp) / "group")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {os.cpu_count()} cores"
    print(f"{args.method} on {args.dataset} ({config['arch']}, batch {config['schedule']['batch_size']}), "
          f"{device} ({name}), torch {torch.__version__}")
    print(f"1 process:  {one:8.1f} images/s ({torch.get_num_threads()} threads)")
    print(f"{args.nproc} ranks:    {group:8.1f} images/s")
    print(f"ratio:      {group / one:8.2f}x")


if __name__ == "__main__":
    main()
