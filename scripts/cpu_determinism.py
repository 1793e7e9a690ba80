"""Which CPU settings change a seeded run's numbers?

    python scripts/cpu_determinism.py [--n-train 500]

Trains the same seeded tiny CATcent run (mnist-mini, eps 0.3, 1 epoch) in fresh processes under
each combination of thread count (OMP_NUM_THREADS 1, 2) and CPU kernel level (ATEN_CPU_CAPABILITY:
the machine's default, avx2, default i.e. no vector kernels), and prints each run's epoch-1
losses and selection accuracy with full precision and whether it is bit-identical to the first.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = """
import json, sys, torch
from cat_bench.settings import Settings
from cat_bench.config import resolve_config
from cat_bench.train import train
config = resolve_config("cat-cent", "mnist-mini", 0.3, epochs=1, n_train=int(sys.argv[2]), select_n=100, batch_size=50)
train(config, sys.argv[1], Settings("cpu", progress=False), log=lambda m: None)
row = json.loads(open(sys.argv[1] + "/history.jsonl").readline())
print(json.dumps({"kernels": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
                  "loss_f": row["train"]["loss_f"], "loss_g": row["train"]["loss_g"], "nat": row["nat_acc"],
                  "rob": row["rob_acc"]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=500)
    args = parser.parse_args()
    results = []
    for capability in (None, "avx2", "default"):
        for threads in ("1", "2"):
            env = {**os.environ, "OMP_NUM_THREADS": threads}
            env.pop("ATEN_CPU_CAPABILITY", None)
            if capability:
                env["ATEN_CPU_CAPABILITY"] = capability
            with tempfile.TemporaryDirectory() as tmp:
                out = subprocess.run([sys.executable, "-c", CHILD, tmp + "/run", str(args.n_train)], env=env,
                                     capture_output=True, text=True, check=True).stdout
            results.append(json.loads(out.strip().splitlines()[-1]))
            r, first = results[-1], results[0]
            same = all(r[k] == first[k] for k in ("loss_f", "loss_g", "nat", "rob"))
            print(f"kernels {r['kernels']:>8}, threads {r['threads']}: loss_f {r['loss_f']!r} loss_g {r['loss_g']!r} "
                  f"nat {r['nat']} rob {r['rob']} | {'identical to the first' if same else 'DIFFERS from the first'}",
                  flush=True)


if __name__ == "__main__":
    main()
