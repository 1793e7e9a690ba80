"""Print the fidelity runs' epochs beside the authors' log as a Markdown table (for results/fidelity/README.md).

    python scripts/fidelity_table.py [--suite mnist-fidelity] [--results results/fidelity]
    python scripts/fidelity_table.py --epochs RUN [--results DIR] [--beside DIR]

The first form: each run's epochs 1, 2, 10, selected and last beside the authors' log. The second:
every trained epoch of one run, optionally beside the same run's records in another folder.

The numbers come from the runs' history.jsonl through the report's own code
(cat_bench.report.fidelity), so results/fidelity/README.md and the rendered Fidelity section agree;
tests/test_fidelity.py checks that committed README against this output.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cat_bench import records
from cat_bench.report.fidelity import fidelity_runs, fmt, log_epochs
from cat_bench.report.runs import load_runs
from cat_bench.suite import load_suite


def markdown(suite: str, results: Path) -> str:
    """One row per (run, shown epoch: the log's, the selected, the last): accuracy, the log's, the
    difference, whether the epoch is within the bar, the mean mask; then each run's verdict."""
    runs, _ = load_runs(load_suite(suite), results)
    frs = fidelity_runs(runs)
    epochs = log_epochs()
    lines = [f"Rows: the log's epochs ({', '.join(map(str, epochs))}), the selected epoch (best natural + PGD-20) "
             "and the last one trained of each run.", "",
             "| run | configuration | epoch | shown as | natural | log | Δ | PGD-20 | log | Δ | bar | mean mask | mask |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for fr in frs:
        for r, why in fr.shown(epochs):
            bar = "—" if r.within is None else "within" if r.within else "**outside**"
            lines.append(f"| {fr.run.name} | {fr.title} | {r.epoch} | {why} | {fmt(r.natural)} | {fmt(r.log_natural)} | "
                         f"{fmt(r.d_natural, True)} | {fmt(r.pgd20)} | {fmt(r.log_pgd20)} | {fmt(r.d_pgd20, True)} | "
                         f"{bar} | {r.traced:.3g} | {r.flag or 'healthy'} |")
    lines.append("")
    lines += [f"- {fr.run.name}: **{fr.verdict}**. {fr.verdict_text}" for fr in frs]
    return "\n".join(lines) + "\n"


def epoch_table(run: str, results: Path, beside: Path | None = None) -> str:
    """Every trained epoch of one run (its history.jsonl): the selection measurement (natural, PGD-20), the
    mean mask and the wall minutes with the measurement; with `beside`, that folder's records of the same run
    and the differences (this run minus that one)."""
    rows = records.read_jsonl(results / "runs" / run / records.HISTORY)
    other = {r["epoch"]: r for r in records.read_jsonl(beside / "runs" / run / records.HISTORY)} if beside else {}
    head = ["epoch", "natural", "PGD-20", "mean mask", "minutes"]
    if beside:
        head += [f"{beside.name}: natural", "PGD-20", "Δ natural", "Δ PGD-20"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r["epoch"]), f"{100 * r['nat_acc']:.2f}", f"{100 * r['rob_acc']:.2f}",
                 f"{r['train']['mask_mean']:.3f}", f"{r['seconds'] / 60:.0f}"]
        if beside and r["epoch"] in other:
            o = other[r["epoch"]]
            cells += [f"{100 * o['nat_acc']:.2f}", f"{100 * o['rob_acc']:.2f}",
                      f"{100 * (r['nat_acc'] - o['nat_acc']):+.2f}", f"{100 * (r['rob_acc'] - o['rob_acc']):+.2f}"]
        elif beside:
            cells += ["—"] * 4
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="mnist-fidelity")
    parser.add_argument("--results", type=Path, default=Path(__file__).resolve().parents[1] / "results" / "fidelity",
                        help="the records (default: this checkout's results/fidelity, wherever it is run from)")
    parser.add_argument("--epochs", metavar="RUN", help="print every trained epoch of this run instead")
    parser.add_argument("--beside", type=Path, metavar="DIR", help="with --epochs: the same run's records there too")
    args = parser.parse_args()
    if args.beside and not args.epochs:
        parser.error("--beside goes with --epochs RUN")
    print(epoch_table(args.epochs, args.results, args.beside) if args.epochs else markdown(args.suite, args.results),
          end="")
