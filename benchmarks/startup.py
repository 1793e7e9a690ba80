"""How long the CLI takes to answer `--help`, `list`, `status` and bad arguments, side by side.

    python benchmarks/startup.py [--repeats 5]

Each command runs in a fresh interpreter twice: as shipped (torch is imported only by commands
that build a network) and with `import torch` first (what every command paid before). Prints the
median wall time of each and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

COMMANDS = [
    ["--help"],
    ["list", "methods"],
    ["list", "architectures"],
    ["status", "--suite", "smoke", "--results", "none-yet"],
    ["train", "--method", "catt", "--dataset", "mnist", "--eps", "0.3"],
    ["train", "--method", "at", "--dataset", "mnist", "--eps", "2"],
    ["run", "--suite", "smoke", "--only", "method=catt", "--dry-run"],
    ["eval", "no-such-run"],
]

RUN = "import sys\nfrom cat_bench.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"


def wall(code: str, argv: list[str], cwd: str, repeats: int) -> float:
    """Median wall seconds of `python -c code argv` over `repeats` runs."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code, *argv], cwd=cwd, capture_output=True, check=False)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5, help="runs per command and variant (median is printed)")
    args = p.parse_args()
    print(f"{'command':<62} {'shipped':>8} {'+torch':>8} {'ratio':>6}")
    with tempfile.TemporaryDirectory() as cwd:
        for argv in COMMANDS:
            shipped = wall(RUN, argv, cwd, args.repeats)
            eager = wall("import torch\n" + RUN, argv, cwd, args.repeats)
            print(f"{'cat-bench ' + ' '.join(argv):<62} {shipped:7.2f}s {eager:7.2f}s {eager / shipped:5.1f}x")


if __name__ == "__main__":
    main()
