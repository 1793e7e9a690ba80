"""The report's Fidelity section: CAT's released MNIST code against the authors' own training log.

A fidelity run is a run of the suite labelled "Fidelity" (the `mnist-fidelity` suite) with a
history, finished or not: its per-epoch selection metric is the log's measurement (natural and
PGD-20 accuracy at eps 0.3 on the full test set). Each run gets its epochs beside the log with the
differences, its mask trajectory from trace.jsonl, and a verdict computed from those numbers.
Tables list the log's epochs (1, 2, 10), the selected epoch and the last one (`FidelityRun.shown`),
so a 40-epoch run reads as five rows; the accuracy plot draws every epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from cat_bench import records
from cat_bench.methods import METHODS, UNIFORM, Method
from cat_bench.paper import load_authors_log

from .figures import PALETTE, _finish_axes, _new, method_label, save_png
from .runs import RunRecord

LABEL = "Fidelity"
TOLERANCE = {"natural": 1.0, "pgd20": 3.0}  # points: the bar for "reproduces the log"


@dataclass
class EpochRow:
    epoch: int
    natural: float  # % on the selection split
    pgd20: float
    traced: float | None  # the epoch's mean of the method's traced value (CAT: the mean mask)
    flag: str | None  # the method's health flag raised in this epoch
    log_natural: float | None = None  # the authors' log at this epoch, %
    log_pgd20: float | None = None

    @property
    def d_natural(self) -> float | None:
        return None if self.log_natural is None else self.natural - self.log_natural

    @property
    def d_pgd20(self) -> float | None:
        return None if self.log_pgd20 is None else self.pgd20 - self.log_pgd20

    @property
    def within(self) -> bool | None:
        """Whether this epoch is within TOLERANCE of the log (None where the log has no such epoch)."""
        if self.log_natural is None or self.log_pgd20 is None:
            return None
        return abs(self.d_natural) <= TOLERANCE["natural"] and abs(self.d_pgd20) <= TOLERANCE["pgd20"]


@dataclass
class FidelityRun:
    run: RunRecord
    identity: dict
    rows: list[EpochRow]
    trace: list[dict]
    selection_n: int | None
    selected: int | None = None  # the epoch the protocol keeps (best so far while training)
    verdict: str = ""  # "reproduced", "not reproduced", "mask collapsed", "mask saturated", "no log"
    verdict_text: str = ""
    compared: list[int] = field(default_factory=list)  # epochs present in both

    @property
    def method(self) -> type[Method]:
        return _method(self.identity)

    def shown(self, log_epochs: Sequence[int]) -> list[tuple[EpochRow, str]]:
        """The rows a table lists, each with why: the log's epochs, the selected epoch and the last one."""
        last = self.rows[-1].epoch if self.rows else None
        out = []
        for r in self.rows:
            why = [w for w, hit in (("log epoch", r.epoch in log_epochs), ("selected", r.epoch == self.selected),
                                    ("last", r.epoch == last)) if hit]
            if why:
                out.append((r, ", ".join(why)))
        return out

    @property
    def title(self) -> str:
        h = self.identity["hparams"]
        return (f"{method_label(self.identity['method'])}, eps_train "
                f"{self.identity['eps']:g}, Eq. 14 KL {'/ B (code)' if h.get('g_kl_reduction') == 'batchmean' else 'summed over the batch'}"
                + ("" if self.identity["seed"] == 0 else f", seed {self.identity['seed']}"))


def fidelity_runs(runs: Sequence[RunRecord]) -> list[FidelityRun]:
    """The suite's fidelity runs that have trained at least one epoch, with the log beside them."""
    log = load_authors_log()
    out = []
    for run in runs:
        if LABEL not in run.spec.labels or not (run.path / records.HISTORY).is_file():
            continue
        identity = records.read_identity(run.path)
        history = records.read_jsonl(run.path / records.HISTORY)
        if not history:
            continue
        mine = log[(log["method"] == identity["method"]) & (log["dataset"] == identity["dataset"])
                   & (abs(log["eps"] - identity["eps"]) < 1e-9)]
        by_epoch = {(int(r.epoch), r.metric): float(r.accuracy) for r in mine.itertuples()}
        method = _method(identity)
        rows = [EpochRow(h["epoch"], 100 * h["nat_acc"], 100 * h["rob_acc"], h.get("train", {}).get(method.TRACE_KEY),
                         next((h[k] for k in method.HEALTH_FLAGS if k in h), None),
                         by_epoch.get((h["epoch"], "natural")), by_epoch.get((h["epoch"], "pgd20")))
                for h in history]
        trace = records.read_jsonl(run.path / records.TRACE)
        fr = FidelityRun(run, identity, rows, trace, identity["selection"]["n"], history[-1].get("best_epoch"))
        fr.verdict, fr.verdict_text = verdict(fr, has_log=bool(by_epoch))
        out.append(fr)
    return out


def _method(identity: dict) -> type[Method]:
    """A fidelity run's method (the paper's, UNIFORM, for a record that names none): its traced value and health."""
    return METHODS.get(identity.get("method"), UNIFORM)


def log_epochs() -> list[int]:
    """The epochs the authors' log records (1, 2, 10)."""
    return sorted(int(e) for e in set(load_authors_log()["epoch"]))


def verdict(fr: FidelityRun, has_log: bool) -> tuple[str, str]:
    """The verdict from the numbers: the mask's fate first (it decides what CAT trained), then the log."""
    fr.compared = [r.epoch for r in fr.rows if r.log_natural is not None and r.log_pgd20 is not None]
    flags = [r for r in fr.rows if r.flag]
    parts = []
    kind = "no log"
    if fr.compared:
        off = [r.epoch for r in fr.rows if r.within is False]
        on = [e for e in fr.compared if e not in off]
        kind = ("reproduced" if not off else "not reproduced" if not on
                else f"reproduced at {_epochs(on)}, not at {_epochs(off)}")
        epochs = [f"epoch {r.epoch} {'outside' if r.epoch in off else 'within'}: natural {r.natural:.1f}% vs "
                  f"{r.log_natural:.1f}% ({fmt(r.d_natural, True)}), PGD-20 {r.pgd20:.1f}% vs the log's "
                  f"{r.log_pgd20:.1f}% ({fmt(r.d_pgd20, True)})" for r in fr.rows if r.epoch in fr.compared]
        head = ("Reproduced within tolerance" if not off else "Not reproduced" if not on
                else f"Within tolerance at {_epochs(on)}, outside at {_epochs(off)}")
        parts.append(f"{head} (±{TOLERANCE['natural']:g} point natural, ±{TOLERANCE['pgd20']:g} points PGD-20): "
                     f"{'; '.join(epochs)}.")
    elif not has_log:
        parts.append("The authors published no log for this configuration; nothing to compare with.")
    else:
        parts.append(f"The log's epochs ({', '.join(map(str, log_epochs()))}) are not trained yet.")
    means = ", ".join(f"{r.traced:.2f}" for r in fr.rows if r.traced is not None)
    if flags:
        fate = flags[0].flag
        kind = (f"mask {fate}" if kind == "not reproduced" or not fr.compared else f"{kind}, mask {fate}")
        what = "x_cal = x: f trains on natural images" if fate == "collapsed" else "x_cal = x + delta: plain adversarial training"
        parts.append(f"The mask {fate} from epoch {flags[0].epoch} (mean mask per epoch {means}): {what}.")
    elif means:
        parts.append(f"Mean mask per epoch {means}.")
    parts += [_excursion_text(*ex) for ex in fr.method.excursions(fr.trace)]
    return kind, " ".join(parts)


def _excursion_text(fate: str, start: tuple[int, int], end: tuple[int, int], recovered: bool) -> str:
    """One excursion of `Method.excursions`, in words: where it began and ended, and whether the mask came back."""
    (e1, b1), (e2, b2) = start, end
    if start == end:
        where = f"at epoch {e1}, batch {b1} (one traced batch)"
    else:
        where = f"from epoch {e1}, batch {b1} to {f'batch {b2}' if e2 == e1 else f'epoch {e2}, batch {b2}'}"
    return f"The traced mask {fate} {where}{', then recovered' if recovered else ' (the last traced batch)'}."


def _epochs(epochs: Sequence[int]) -> str:
    """"epoch 10", "epochs 1 and 2", "epochs 1, 2 and 10"."""
    if len(epochs) == 1:
        return f"epoch {epochs[0]}"
    return f"epochs {', '.join(map(str, epochs[:-1]))} and {epochs[-1]}"


def accuracy_plot(frs: Sequence[FidelityRun], out: Path) -> None:
    """Natural and PGD-20 accuracy per epoch of every fidelity run, the authors' log as black crosses."""
    fig, axes = _new(2, width=4.2, height=3.0)
    for i, fr in enumerate(frs):
        color = PALETTE[i % len(PALETTE)]
        style = "-" if fr.identity["hparams"].get("g_kl_reduction") == "batchmean" else "--"
        epochs = [r.epoch for r in fr.rows]
        for ax, key in zip(axes, ("natural", "pgd20")):
            ax.plot(epochs, [getattr(r, key) for r in fr.rows], style, marker="o", markersize=3, color=color,
                    label=fr.title)
    log = load_authors_log()
    for ax, key in zip(axes, ("natural", "pgd20")):
        pts = log[log["metric"] == key]
        ax.plot(pts["epoch"], pts["accuracy"], "kx", markersize=7, label="authors' log (CATcw, eps 0.4)")
    _finish_axes(axes[0], "Natural accuracy (test, %)", "epoch", "accuracy (%)")
    _finish_axes(axes[1], "PGD-20 accuracy at eps 0.3 (test, %)", "epoch")
    for ax in axes:
        ax.set_ylim(-2, 102)
    save_png(fig, out)


def mask_plot(frs: Sequence[FidelityRun], out: Path) -> bool:
    """The mean mask over training steps (log scale; shaded: ± its std over pixels), one line per run."""
    traced = [fr for fr in frs if fr.trace]
    if not traced:
        return False
    fig, (ax,) = _new(1, width=7.0, height=3.0)
    for i, fr in enumerate(traced):
        steps = [t["step"] for t in fr.trace]
        means = [max(t[fr.method.TRACE_KEY], 1e-9) for t in fr.trace]
        ax.plot(steps, means, "-" if fr.identity["hparams"].get("g_kl_reduction") == "batchmean" else "--",
                color=PALETTE[i % len(PALETTE)], label=fr.title, linewidth=1.2)
    ax.set_yscale("log")
    low, high = traced[0].method.HEALTH_BAND
    ax.axhspan(low, high, color="#1a7f37", alpha=0.07, label=f"healthy band [{low:g}, {high:g}]")
    ax.set_ylim(1e-9, 2)
    _finish_axes(ax, "Mean mask M over training (every 10 batches)", "training step (batch)", "mean mask (log)")
    save_png(fig, out)
    return True


def fmt(v: float | None, signed: bool = False) -> str:
    """A percentage cell: one decimal, '—' for none."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v + 0.0:+.1f}".replace("-0.0", "+0.0") if signed else f"{v:.1f}"
