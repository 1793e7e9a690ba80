"""The paper's Figures 2-6 and each run's training curves, drawn with matplotlib (Agg) into PNG files.

Figures 3-6 use the suite's finished runs labelled "Figure N" (the shipped suites label them so);
Figure 2 needs a finished run of a method with a mask net (`Method.mask_figure`: CATcent, CATcw)
on the MNIST family whose checkpoints/best.pt is on disk, or a model folder exported from a run of
the same configuration (`cat-bench export`; checkpoints are not committed, model folders are).
Each method's label and colour are its adapter's (`Method.label`, `Method.color`). A figure without data is not drawn: its `FigureResult`
carries a note naming the runs it needs and the `cat-bench run --suite ... --only 'label=Figure N'`
command that makes them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from cat_bench import records, shipped  # noqa: E402
from cat_bench.data import dataset_info  # noqa: E402
from cat_bench.methods import METHODS  # noqa: E402
from cat_bench.suite import SUITES, RunSpec  # noqa: E402

from cat_bench.presets import format_eps, format_value  # noqa: E402
from cat_bench.shell import command  # noqa: E402

from .runs import RunRecord  # noqa: E402

DPI = 100
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]

FIGURES = {
    "2": ("MNIST: five test digits (columns); rows: the natural image, its PGD-20 adversarial example (eps 0.3), "
          "the mask M = g(x + δ) and the calibrated example x + M δ (clipped to [0, 1] only under a protocol "
          "that clips; the line below says which); f's prediction under each.",
          "a finished CATcent or CATcw run on MNIST with its checkpoint (checkpoints/best.pt) or its exported "
          "model folder"),
    "3": ("Natural and PGD-20 accuracy (and their sum) against the training eps, for AT, TRADES and CATcent.",
          "the runs labelled 'Figure 3' (AT, TRADES and CATcent trained at several eps)"),
    "4": ("Ablation: natural accuracy and natural + robust accuracy (the selection attack) per epoch for "
          "A1 (no mask, plain CE), A2 (mask, plain CE) and CATcent.",
          "the runs labelled 'Figure 4' (CATcent with ablation none, A1 and A2)"),
    "5": ("The PGD loss of CAT's training attack (CE, KL, CW): robust accuracy (the selection attack) per epoch, "
          "one panel per setting.",
          "the runs labelled 'Figure 5' (CATcent with pgd_loss ce, kl and cw)"),
    "6": ("The calibration strength b: natural accuracy, PGD-20 accuracy and their sum against b, for CATcent "
          "and CATcw.",
          "the runs labelled 'Figure 6' (CATcent and CATcw over b)"),
}


def method_label(name: str) -> str:
    """A method's name as the report prints it (its adapter's `label`; an unregistered name as it is)."""
    return METHODS[name].label if name in METHODS else name


def method_color(name: str) -> str | None:
    """A method's colour in the figures (its adapter's `color`; None: matplotlib's next)."""
    return METHODS[name].color if name in METHODS else None


def method_order(name: str) -> int:
    """Where a method comes in legends and panels: its place in the registry, unregistered names last."""
    return list(METHODS).index(name) if name in METHODS else len(METHODS)


@dataclass
class FigureResult:
    id: str  # "2"
    title: str  # "Figure 2"
    caption: str
    image: str | None = None  # path relative to the report folder
    note: str | None = None  # why it is not drawn, or what is still missing
    command: str | None = None  # the command that makes the missing runs
    source: str | None = None  # which runs it was drawn from (text)

    @property
    def key(self) -> str:
        return f"figure{self.id}"


def save_png(fig: Figure, path: Path) -> None:
    """Write a figure atomically (temp file + rename), with no timestamp or version metadata."""
    records._atomic(Path(path), lambda fh: fig.savefig(fh, format="png", dpi=DPI, metadata={"Software": None}))


def _label_command(label: str, specs: Sequence[RunSpec], suite_ref: str | None,
                   results: str | None = None) -> tuple[str | None, str | None]:
    """`cat-bench run --suite S --results R --only 'label=Figure N'` with this suite if it has such runs, else a
    shipped one (suite_ref None: a folder of runs, no suite)."""
    ref = suite_ref if suite_ref is not None and any(label in s.labels for s in specs) else None
    if ref is None:
        from .tables import _shipped_suite

        for name in sorted(SUITES, key=lambda n: (n == "paper", n)):
            try:
                if any(label in s.labels for s in _shipped_suite(name).runs):
                    ref = name
                    break
            except Exception:  # a broken shipped suite must not break the report
                continue
    if ref is None:
        return None, None
    note = None if ref == suite_ref else f"this suite has no runs labelled {label!r}; the shipped suite {ref!r} does"
    where = ["--results", results] if results else []
    return command("run", "--suite", ref, *where, "--only", f"label={label}"), note


def _labelled(runs: Sequence[RunRecord], label: str) -> tuple[list[RunRecord], list[RunRecord]]:
    """(finished, all) runs of the suite carrying `label`."""
    every = [r for r in runs if label in r.spec.labels]
    return [r for r in every if r.finished], every


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _new(ncols: int, width: float = 3.3, height: float = 2.8) -> tuple[Figure, list]:
    fig = Figure(figsize=(width * ncols, height), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    for ax in axes:
        ax.grid(True, alpha=0.3, linewidth=0.6)
        ax.tick_params(labelsize=8)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    return fig, list(axes)


def _finish_axes(ax, title: str, xlabel: str, ylabel: str | None = None) -> None:
    if xlabel == "epoch":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        xs = {x for line in ax.get_lines() for x in line.get_xdata()}
        if len(xs) == 1:  # one epoch: centre it instead of a sub-epoch axis
            (x,) = xs
            ax.set_xlim(x - 1, x + 1)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=8)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, frameon=False)


# ---------------------------------------------------------------------------------------------
# Figure 2: natural / adversarial / mask / calibrated examples from a trained CAT model


def figure2(runs: Sequence[RunRecord], out: Path, *, device: str = "cpu", data_root=None,
            models: Path = shipped.MODELS) -> tuple[str | None, str]:
    """Draw Figure 2 into `out` from the best-suited run with a mask net; returns (run name or None, note or source).

    The run's checkpoints/best.pt when on disk, else a model folder under `models` exported from its configuration.
    """
    cands = [r for r in runs if r.finished and r.identity["method"] in METHODS
             and METHODS[r.identity["method"]].mask_figure and dataset_info(r.identity["dataset"]).family == "mnist"]
    if not cands:
        masked = " or ".join(cls.label for cls in METHODS.values() if cls.mask_figure)
        return None, f"no finished {masked} run on MNIST in this suite"
    cands.sort(key=lambda r: ("Figure 2" not in r.spec.labels, r.identity["dataset"] != "mnist",
                              method_order(r.identity["method"]), r.identity["seed"], r.name))
    for run in cands:
        try:
            found = figure2_networks(run.path / records.BEST, run.name, run.identity, models, device)
            if found is None:
                continue
            panels = figure2_panels(run.identity, found[0], device, data_root)
        except Exception as err:  # missing dataset, corrupt checkpoint or model folder: the report still renders
            return None, f"could not draw it from {run.name}: {type(err).__name__}: {err}"
        draw_figure2(panels, out)
        ident = run.identity
        from cat_bench.presets import clips

        domain = ("clip(x + M δ, 0, 1)" if clips("mnist", ident["protocol"])
                  else f"x + M δ, not clipped ({ident['protocol']} protocol)")
        return run.name, (f"{run.name}: {method_label(ident['method'])} on {ident['dataset']}, "
                          f"eps_train {format_eps(ident['eps'])}, seed {ident['seed']}, {found[1]}; "
                          f"calibrated example {domain}; five test images drawn with seed 0")
    return None, (f"{len(cands)} finished mask-net run(s) on MNIST, but none has its checkpoint ({records.BEST}) "
                  f"on disk or a model folder under {models}")


def figure2_networks(checkpoint: Path, run_name: str, identity: dict, models: Path, device):
    """(networks, where they came from) for Figure 2: the run's `checkpoint` when on disk, else the first model
    folder under `models` exported from a run of this name and identity (its weights verified against its card);
    None when there is neither."""
    from cat_bench.lazy import torch
    from cat_bench.networks import Networks

    if checkpoint.is_file():
        ckpt = records.load_checkpoint(checkpoint)
        nets = Networks(identity, torch.device(device))
        nets.load(ckpt["nets"])
        return nets, f"this run's {checkpoint.parent.name}/{checkpoint.name}, epoch {ckpt['epoch']}"
    for folder, card in shipped.exported_from(run_name, identity, models):
        shipped.verify_weights(folder, card)
        return (shipped.load_networks(folder, card, torch.device(device)),
                f"the shipped model {folder}, epoch {card['weights']['epoch']} (this configuration; its card "
                f"says where and how it trained)")
    return None


def draw_figure2(panels, out: Path) -> None:
    """Four rows (natural, PGD-20 adversarial, mask, calibrated) of five digits; the mask in colour with its scale."""
    x, x_adv, mask, x_cal, y, preds = panels
    fig = Figure(figsize=(7.0, 5.6), dpi=DPI, layout="constrained")
    axes = fig.subplots(4, 5)
    names = ["Natural", "Adv (PGD-20)", "Mask M", "Calibrated"]
    shown = None
    for i, (name, imgs) in enumerate(zip(names, (x, x_adv, mask, x_cal))):
        for j in range(5):
            ax = axes[i][j]
            cmap = "viridis" if name == "Mask M" else "gray"
            im = ax.imshow(imgs[j, 0], cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if name == "Mask M":
                shown = im
                ax.set_xlabel(f"mean {imgs[j].mean():.2g}", fontsize=7)
            else:
                ok = preds[i][j] == y[j]
                ax.set_xlabel(f"f: {preds[i][j]}", fontsize=7, color="#1a7f37" if ok else "#cf222e")
            if j == 0:
                ax.set_ylabel(name, fontsize=8)
            if i == 0:
                ax.set_title(f"label {y[j]}", fontsize=8)
    fig.colorbar(shown, ax=list(axes[2]), shrink=0.9, label="M")
    save_png(fig, out)


def figure2_panels(identity: dict, nets, device: str, data_root):
    """Five seeded MNIST test digits, their PGD-20 examples (eps 0.3), the method's mask and calibrated examples,
    under the run's protocol (the paper protocol clips neither), with f's prediction for each (`nets`: the
    run's networks, cat_bench.networks.Networks)."""
    import torch

    from cat_bench.attacks import PGD
    from cat_bench.data import load_split
    from cat_bench.eval_attacks import eval_attack
    from cat_bench.presets import clips

    dev = torch.device(device)
    f = nets.f.eval()
    for net in nets.extra.values():
        net.eval()
    x, y = load_split(identity["dataset"], "test", data_root)
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))[:5]
    x, y = x[idx].float().div(255).to(dev), y[idx].to(dev)
    p = eval_attack("mnist", "pgd20", 0.3)
    clip = clips("mnist", identity["protocol"])
    attack = PGD(eps=p.eps, alpha=p.alpha, steps=p.steps, loss=p.loss, random_start=p.random_start, kappa=p.kappa,
                 clip=clip)
    torch.manual_seed(0)
    x_adv = attack(f, x, y)
    with torch.no_grad():
        mask, x_cal = METHODS[identity["method"]].mask_rows(nets.extra, x, x_adv, clip)
        preds = [f(v).argmax(1).tolist() for v in (x, x_adv, x_adv, x_cal)]
    return (x.cpu().numpy(), x_adv.cpu().numpy(), mask.cpu().numpy(), x_cal.cpu().numpy(), y.tolist(), preds)


# ---------------------------------------------------------------------------------------------
# Figures 3-6 from evaluations and training histories


def _eps_axis(dataset: str) -> tuple[Callable[[float], float], str]:
    if dataset_info(dataset).family == "cifar":
        return (lambda e: e * 255), "training eps (×1/255)"
    return (lambda e: e), "training eps"


def figure3(done: Sequence[RunRecord], out: Path) -> bool:
    groups: dict[tuple[str, float], list[RunRecord]] = {}
    for r in done:
        if r.accuracy("natural") is not None and r.accuracy("pgd20") is not None:
            groups.setdefault((r.identity["method"], r.identity["eps"]), []).append(r)
    if not groups:
        return False
    scale, xlabel = _eps_axis(next(iter(groups.values()))[0].identity["dataset"])
    fig, axes = _new(3)
    panels = [("Natural", lambda r: r.accuracy("natural")), ("PGD-20", lambda r: r.accuracy("pgd20")),
              ("Natural + PGD-20", lambda r: r.accuracy("natural") + r.accuracy("pgd20"))]
    for method in sorted({m for m, _ in groups}, key=method_order):
        points = sorted((eps, rs) for (m, eps), rs in groups.items() if m == method)
        xs = [scale(eps) for eps, _ in points]
        for ax, (_, value) in zip(axes, panels):
            ax.plot(xs, [_mean([value(r) for r in rs]) for _, rs in points], marker="o", markersize=4,
                    color=method_color(method), label=method_label(method))
    for ax, (title, _) in zip(axes, panels):
        _finish_axes(ax, title, xlabel, "accuracy (%)" if title == "Natural" else None)
    save_png(fig, out)
    return True


def _per_epoch(runs: Sequence[RunRecord], value: Callable[[dict], float]) -> tuple[list[int], list[float]]:
    """A history quantity averaged over runs (seeds), per epoch that every run has."""
    by_epoch: dict[int, list[float]] = {}
    for r in runs:
        for row in r.history:
            by_epoch.setdefault(row["epoch"], []).append(value(row))
    epochs = sorted(e for e, v in by_epoch.items() if len(v) == len(runs))
    return epochs, [_mean(by_epoch[e]) for e in epochs]


def _selection_name(run: RunRecord) -> str:
    sel = run.identity.get("selection", {}).get("attack", {})
    return f"PGD-{sel['steps']}" if sel.get("steps") else "robust"


def figure4(done: Sequence[RunRecord], out: Path) -> bool:
    groups: dict[str, list[RunRecord]] = {}
    for r in done:
        if r.history and "ablation" in r.identity["hparams"]:
            groups.setdefault(r.identity["hparams"]["ablation"], []).append(r)
    if not groups:
        return False
    sel = _selection_name(next(iter(groups.values()))[0])
    fig, axes = _new(2, width=3.8)
    for i, ab in enumerate(sorted(groups, key=lambda a: (a == "none", a))):  # the ablations, then the full method
        rs = groups[ab]
        label = METHODS[rs[0].identity["method"]].variant_label(rs[0].identity["hparams"])
        for ax, value in zip(axes, (lambda h: 100 * h["nat_acc"], lambda h: 100 * (h["nat_acc"] + h["rob_acc"]))):
            xs, ys = _per_epoch(rs, value)
            ax.plot(xs, ys, marker="o" if len(xs) < 20 else None, markersize=3, color=PALETTE[i], label=label)
    _finish_axes(axes[0], "Natural", "epoch", "accuracy (%)")
    _finish_axes(axes[1], f"Natural + {sel}", "epoch")
    save_png(fig, out)
    return True


def figure5(done: Sequence[RunRecord], out: Path) -> bool:
    settings: dict[tuple, dict[str, list[RunRecord]]] = {}
    for r in done:
        hp = r.identity["hparams"]
        if r.history and "pgd_loss" in hp:
            key = tuple((k, hp[k]) for k in ("beta", "b") if k in hp)
            settings.setdefault(key, {}).setdefault(hp["pgd_loss"], []).append(r)
    if not settings:
        return False
    sel = _selection_name(next(iter(next(iter(settings.values())).values()))[0])
    fig, axes = _new(len(settings), width=3.6)
    for ax, key in zip(axes, sorted(settings)):
        for i, loss in enumerate(("ce", "kl", "cw")):
            if loss in settings[key]:
                xs, ys = _per_epoch(settings[key][loss], lambda h: 100 * h["rob_acc"])
                ax.plot(xs, ys, marker="o" if len(xs) < 20 else None, markersize=3, color=PALETTE[i],
                        label=loss.upper())
        title = ", ".join(f"{'a' if k == 'beta' else k}={format_value(v)}" for k, v in key) or "default"
        _finish_axes(ax, title, "epoch", f"{sel} accuracy (%)" if ax is axes[0] else None)
    save_png(fig, out)
    return True


def figure6(done: Sequence[RunRecord], out: Path) -> bool:
    by_method: dict[str, dict[float, list[RunRecord]]] = {}
    for r in done:
        if "b" in r.identity["hparams"] and r.accuracy("natural") is not None and r.accuracy("pgd20") is not None:
            by_method.setdefault(r.identity["method"], {}).setdefault(r.identity["hparams"]["b"], []).append(r)
    if not by_method:
        return False
    methods = sorted(by_method, key=method_order)
    fig, axes = _new(len(methods), width=3.8)
    for ax, method in zip(axes, methods):
        bs = sorted(by_method[method])
        nat = [_mean([r.accuracy("natural") for r in by_method[method][b]]) for b in bs]
        rob = [_mean([r.accuracy("pgd20") for r in by_method[method][b]]) for b in bs]
        for i, (name, ys) in enumerate((("Natural", nat), ("PGD-20", rob),
                                        ("Natural + PGD-20", [a + c for a, c in zip(nat, rob)]))):
            ax.plot(bs, ys, marker="o", markersize=4, color=PALETTE[i], label=name)
        if len(bs) > 1 and min(bs) > 0 and max(bs) / min(bs) > 20:
            ax.set_xscale("log")
        _finish_axes(ax, method_label(method), "b", "accuracy (%)" if ax is axes[0] else None)
    save_png(fig, out)
    return True


def paper_figures(runs: Sequence[RunRecord], folder: Path, suite_ref: str | None, *, device: str = "cpu",
                  data_root=None, results_dir: str | None = None, models: Path = shipped.MODELS) -> list[FigureResult]:
    """Figures 2-6 into `folder` (PNG); each result has its image path relative to folder's parent, or a note
    and the command (into `results_dir`) that fills it."""
    specs = [r.spec for r in runs]
    results = []
    for fid, (caption, needs) in FIGURES.items():
        label = f"Figure {fid}"
        res = FigureResult(fid, label, caption)
        path = folder / f"figure{fid}.png"
        rel = f"{folder.name}/{path.name}"
        if fid == "2":
            name, text = figure2(runs, path, device=device, data_root=data_root, models=models)
            if name:
                res.image, res.source = rel, text
            else:
                res.note = f"Not drawn: {text}. It needs {needs}."
                res.command, extra = _label_command(label, specs, suite_ref, results_dir)
                if extra:
                    res.note += f" ({extra})"
        else:
            done, every = _labelled(runs, label)
            drawn = {"3": figure3, "4": figure4, "5": figure5, "6": figure6}[fid](done, path) if done else False
            if drawn:
                res.image = rel
                res.source = f"{len(done)} finished run(s) labelled {label!r}"
            missing = len(every) - len(done)
            if not drawn or missing:
                res.command, extra = _label_command(label, specs, suite_ref, results_dir)
                if drawn:
                    res.note = f"{missing} of the suite's {len(every)} runs labelled {label!r} are not finished yet."
                else:
                    res.note = f"Not drawn: no finished run for it. It needs {needs}."
                    if extra:
                        res.note += f" ({extra})"
        if res.image is None and path.exists():
            path.unlink()  # a stale image from an earlier render must not be shown
        results.append(res)
    return results


# ---------------------------------------------------------------------------------------------
# A run's training curves


def run_curves(run: RunRecord, out: Path) -> str | None:
    """Natural and robust (selection attack) accuracy per epoch, the training losses, and on a third axis
    the epoch statistics that are not losses (CAT's mask mean and spread, in [0, 1]); returns the
    caption naming each panel drawn, or None without history (nothing drawn)."""
    hist = run.history
    if not hist:
        return None
    epochs = [h["epoch"] for h in hist]
    marker = "o" if len(epochs) < 30 else None
    keys = list(dict.fromkeys(k for h in hist for k in h.get("train", {})))
    losses = [k for k in keys if "loss" in k]
    others = [k for k in keys if k not in losses]
    fig, axes = _new(3 if others else 2, width=4.2, height=2.9)
    acc, loss = axes[0], axes[1]
    acc.plot(epochs, [100 * h["nat_acc"] for h in hist], marker=marker, markersize=3, color=PALETTE[0],
             label="natural")
    acc.plot(epochs, [100 * h["rob_acc"] for h in hist], marker=marker, markersize=3, color=PALETTE[3],
             label=_selection_name(run))
    best = (run.done or {}).get("best_epoch")
    if best is not None:
        acc.axvline(best, color="#555", linestyle="--", linewidth=0.8, label=f"selected (epoch {best})")
    for ax, group, offset in ((loss, losses, 1), *(((axes[2], others, 1 + len(losses)),) if others else ())):
        for i, k in enumerate(group):
            ax.plot(epochs, [h.get("train", {}).get(k, math.nan) for h in hist], marker=marker, markersize=3,
                    color=PALETTE[(i + offset) % len(PALETTE)], label=k)
    _finish_axes(acc, "Accuracy on the selection split", "epoch", "accuracy (%)")
    _finish_axes(loss, "Training losses (epoch mean)", "epoch")
    third = "Mask (epoch mean)" if any("mask" in k for k in others) else "Other statistics"
    if others:
        _finish_axes(axes[2], third, "epoch")
    save_png(fig, out)
    caption = ("Left: natural and robust accuracy (%) per epoch on the selection split; the dashed line marks the "
               "selected epoch. " + ("Middle" if others else "Right") + ": training losses (epoch means).")
    if others:
        caption += f" Right: {', '.join(others)} (epoch means)."
    return caption
