"""One training run with every core beside several runs at once with a share of the cores each.

    python benchmarks/concurrent_runs.py --data-root data-cache          # Table 1's CATcent on full MNIST
    python benchmarks/concurrent_runs.py --dataset mnist-mini --batches 5  # a quick look

On a CPU a run takes the machine's cores as intra-op threads; the same cores can instead train
`--runs` runs at once with cores / runs threads each. This script measures both in one sitting,
alternately (`--repeats` rounds, so a drift of the machine's speed shows as a spread, not a bias):
each worker is a fresh process that builds the run exactly as `cat-bench train` does
(`cat_bench.train._Session`: the protocol's data loader, networks, method and optimisers for the
config of `--method/--dataset/--eps`, the released code's protocol), takes `--warmup` updates,
then times `--batches` updates. It prints training images per second: the one run's, and the
sum over the runs that trained at once. A ratio above 1 means several runs at once train more
images per hour than one run with every thread.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def worker(args) -> None:
    """Build the run as training does, take the warm-up updates, print the timed images/s as JSON."""
    import torch

    from cat_bench import distributed
    from cat_bench.methods.base import lr_at
    from cat_bench.networks import resolve_device
    from cat_bench.config import resolve_config
    from cat_bench.train import _Session, step

    config = resolve_config(args.method, args.dataset, args.eps)
    torch.manual_seed(config["seed"])
    with tempfile.TemporaryDirectory() as tmp:
        run = _Session(config, Path(tmp), distributed.from_env(), resolve_device("cpu"), lambda m: None, False, 10)
        run.load_data(args.data_root)
        run.build(None)
    batch = config["schedule"]["batch_size"]
    t0 = None
    for i, (x, y) in enumerate(run.loader.epoch(0)):
        if i == args.warmup:
            t0 = time.perf_counter()
        if i == args.warmup + args.batches:
            break
        run.method.set_lr(lr_at(run.schedule, 0, i, len(run.loader)))
        step(run.built, x, y, 1)
    seconds = time.perf_counter() - t0
    print(json.dumps({"images_per_s": args.batches * batch / seconds, "threads": torch.get_num_threads(),
                      "seconds": seconds}))


def launch(args, threads: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = [sys.executable, __file__, "--worker", "--method", args.method, "--dataset", args.dataset,
           "--eps", str(args.eps), "--batches", str(args.batches), "--warmup", str(args.warmup)]
    if args.data_root:
        cmd += ["--data-root", args.data_root]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)


def rates(args, runs: int, threads: int) -> list[float]:
    """images/s of each of `runs` workers started together with `threads` threads each."""
    procs = [launch(args, threads) for _ in range(runs)]
    out = []
    for p in procs:
        stdout, _ = p.communicate()
        if p.returncode != 0:
            sys.exit(f"a worker failed (exit status {p.returncode})")
        out.append(json.loads(stdout.strip().splitlines()[-1])["images_per_s"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="cat-cent", help="method (default cat-cent)")
    ap.add_argument("--dataset", default="mnist", help="mnist (default), mnist-mini")
    ap.add_argument("--eps", type=float, default=0.4, help="eps_train (default 0.4: Table 1's row)")
    ap.add_argument("--data-root", help="dataset root holding MNIST/raw (mnist)")
    ap.add_argument("--cores", type=int, default=os.cpu_count(), help="threads of the one run (default: all cores)")
    ap.add_argument("--runs", type=int, default=2, help="runs at once, cores / runs threads each (default 2)")
    ap.add_argument("--batches", type=int, default=30, help="timed updates per worker (default 30)")
    ap.add_argument("--warmup", type=int, default=2, help="updates before the timing (default 2)")
    ap.add_argument("--repeats", type=int, default=2, help="rounds of the two settings, alternated (default 2)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    if args.cores % args.runs:
        ap.error(f"--cores {args.cores} does not split into --runs {args.runs} equal thread counts")
    each = args.cores // args.runs
    one, several = [], []
    for _ in range(args.repeats):
        one.append(rates(args, 1, args.cores)[0])
        several.append(sum(rates(args, args.runs, each)))
    import torch
    print(f"{args.method} at eps_train {args.eps} on {args.dataset} (the released code's protocol), "
          f"{os.cpu_count()} cores, torch {torch.__version__}; {args.batches} timed updates per worker "
          f"after {args.warmup}, {args.repeats} rounds")
    print("\n| setting | training images/s, each round | mean |\n|---|---|---|")
    print(f"| 1 run, {args.cores} threads | {', '.join(f'{r:.1f}' for r in one)} | {sum(one) / len(one):.1f} |")
    print(f"| {args.runs} runs at once, {each} thread(s) each (summed) | {', '.join(f'{r:.1f}' for r in several)} "
          f"| {sum(several) / len(several):.1f} |")
    print(f"\nratio ({args.runs} at once / 1 run): {sum(several) / sum(one):.2f}x")


if __name__ == "__main__":
    main()
