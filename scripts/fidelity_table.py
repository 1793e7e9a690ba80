"""Print the fidelity runs' epochs beside the authors' log as a Markdown table (for results/fidelity/README.md).

    python scripts/fidelity_table.py [--suite mnist-fidelity] [--results results/fidelity]

The numbers come from the runs' history.jsonl through the report's own code
(cat_bench.report.fidelity), so the README and the rendered Fidelity section agree;
tests/test_fidelity.py checks the committed README against this output.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cat_bench.report.fidelity import fidelity_runs, fmt
from cat_bench.report.runs import load_runs
from cat_bench.suite import load_suite


def markdown(suite: str, results: Path) -> str:
    """One row per (run, epoch): accuracy, the log's, the difference, the mean mask; then each verdict."""
    runs, _ = load_runs(load_suite(suite), results)
    frs = fidelity_runs(runs)
    lines = ["| run | configuration | epoch | natural | log | Δ | PGD-20 | log | Δ | mean mask | mask |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for fr in frs:
        for r in fr.rows:
            lines.append(f"| {fr.run.name} | {fr.title} | {r.epoch} | {fmt(r.natural)} | {fmt(r.log_natural)} | "
                         f"{fmt(r.d_natural, True)} | {fmt(r.pgd20)} | {fmt(r.log_pgd20)} | {fmt(r.d_pgd20, True)} | "
                         f"{r.mask_mean:.3g} | {r.mask_flag or 'healthy'} |")
    lines.append("")
    lines += [f"- {fr.run.name}: **{fr.verdict}**. {fr.verdict_text}" for fr in frs]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="mnist-fidelity")
    parser.add_argument("--results", type=Path, default=Path("results/fidelity"))
    args = parser.parse_args()
    print(markdown(args.suite, args.results), end="")
