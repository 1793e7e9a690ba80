"""`cat-bench report`: a static HTML report of a suite's results against the paper.

`render_report(suite, results, out)` builds the report in a hidden folder beside `out` and then puts
it in `out`'s place (a failed or killed build leaves the old report whole):

    index.html           the paper's Tables 1-4, 7, 8 (reproduced vs published), Figures 2-6, the
                         leaderboard and the list of the suite's runs
    style.css            the one stylesheet (linked relatively; no JavaScript, no network)
    figures/*.png        Figures 2-6 (only those with data)
    runs/<run>.html      one page per finished run: config, training curves, selected epoch,
    runs/<run>.png       evaluation, time, hardware and versions

Table cells carry `data-cell="table<N>/<row label>/<metric>"` (plus `@<arch>` in Table 4,
`.../verdict` for the row's verdict, `.../runs` for the runs column, and `table<N>/counts` for the
table's verdict counts) and `data-mark`: "above|below|within" on a cell whose difference is shown,
"reproduced|not-reproduced|not-run" on a verdict; `read_cells` extracts them from the HTML.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from html.parser import HTMLParser
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from cat_bench import __version__, records
from cat_bench.data import dataset_info
from cat_bench.results import concise, in_attack_order, summarize
from cat_bench.paper import load_authors_log
from cat_bench.presets import format_eps, format_value
from cat_bench.rundir import RunLock, claim
from cat_bench.shell import command
from cat_bench.shipped import MODELS
from cat_bench.suite import SUITES_DIR, Suite, folder_suite, load_suite

from .fidelity import TOLERANCE, accuracy_plot, fidelity_runs, fmt, log_epochs, mask_plot
from .figures import draw_figure2, figure2_networks, figure2_panels, paper_figures, run_curves
from .runs import STATE_LABELS, RunRecord, in_progress, load_runs
from .tables import (ARCH_LABELS, DATASET_LABELS, Table, build_tables, health_flags, health_trend, leaderboard,
                     metric_label)

__all__ = ["render_report", "read_cells", "suite_reference"]

TEMPLATES = Path(__file__).resolve().parent / "templates"


def suite_reference(suite: Suite) -> str:
    """How commands name the suite: a shipped suite by name, a file by its path (relative to the
    working directory when it lies below it)."""
    if suite.path.parent == SUITES_DIR:
        return suite.name
    try:
        return os.path.relpath(suite.path) if suite.path.is_relative_to(Path.cwd()) else str(suite.path)
    except ValueError:
        return str(suite.path)


def _write(path: Path, text: str) -> None:
    records._atomic(Path(path), lambda fh: fh.write(text.encode("utf-8")))


def _env() -> Environment:
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True, trim_blocks=True,
                      lstrip_blocks=True, undefined=StrictUndefined, keep_trailing_newline=True)
    env.filters["pct"] = lambda v, d=2: "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{d}f}"
    env.filters["eps"] = format_eps
    env.filters["value"] = format_value
    env.globals.update(metric_label=metric_label, arch_labels=ARCH_LABELS, dataset_labels=DATASET_LABELS,
                       version=__version__)
    return env


def _attack_settings(settings: dict) -> str:
    """An attack's key settings in a few words."""
    kind = settings.get("kind")
    if kind == "natural":
        return "clean test images"
    if kind == "autoattack":
        return (f"AutoAttack {settings.get('version', 'standard')} ({', '.join(settings.get('subattacks', []))}), "
                f"eps {settings['eps']:.4g}")
    if kind == "square":
        return f"Square, {settings.get('steps')} queries, eps {settings['eps']:.4g}"
    parts = [f"{settings.get('steps')} step{'s' if settings.get('steps') != 1 else ''}",
             f"step size {settings['alpha']:.4g}", f"eps {settings['eps']:.4g}", f"loss {settings.get('loss')}"]
    if settings.get("loss") == "cw":
        parts.append(f"kappa {settings.get('kappa'):g}")
    rs = settings.get("random_start", "none")
    parts.append("no random start" if rs == "none" else f"{rs} random start")
    if settings.get("clip") is False:
        parts.append("not clipped to [0,1] (paper protocol)")
    return ", ".join(parts)


def _flatten(d: dict, prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict):
            out += _flatten(v, f"{prefix}{k}.")
        else:
            out.append((prefix + k, "—" if v is None else str(v)))
    return out


def _fmt_seconds(s: float) -> str:
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def _run_page(run: RunRecord, tables: list[Table], curves: str | None) -> dict:
    """The context of one run page."""
    ev = run.evaluation
    attacks = ev.get("attacks", {})
    order = in_attack_order(attacks)
    rows = [{"name": a, "label": metric_label(a), "accuracy": 100 * attacks[a]["accuracy"],
             "settings": _attack_settings(attacks[a].get("settings", {})), "seconds": attacks[a].get("seconds")}
            for a in order]
    if "worst-case" in ev:
        rows.append({"name": "worst-case", "label": metric_label("worst-case"),
                     "accuracy": 100 * ev["worst-case"]["accuracy"], "seconds": 0.0,
                     "settings": "correct under every attack above (per-example records)"})
    train_s = sum(h.get("seconds", 0.0) for h in run.history)
    eval_s = sum(a.get("seconds") or 0.0 for a in attacks.values())
    sessions, _ = records.training_sessions(run.path)
    loss_keys = list(dict.fromkeys(k for h in run.history for k in h.get("train", {})))
    serves = [{"table": t.title, "anchor": t.key, "row": r.label}
              for t in tables for r in t.rows if any(run.name in rt.runs for rt in r.targets)]
    best = run.done.get("best_epoch")
    best_row = next((h for h in run.history if h["epoch"] == best), None)
    return {
        "run": run, "ident": run.identity, "eval_rows": rows, "flags": ev.get("flags", []), "key": ev.get("key", {}),
        "checks": ev.get("checks", []),
        "health_flags": health_flags(run), "health": health_trend(run),
        "config_json": json.dumps(run.identity, indent=2, sort_keys=True),
        "train_provenance": _flatten(run.provenance or {}), "eval_provenance": _flatten(ev.get("provenance", {})),
        "train_seconds": _fmt_seconds(train_s), "eval_seconds": _fmt_seconds(eval_s),
        "total_seconds": _fmt_seconds(train_s + eval_s), "sessions": len(sessions),
        "curves": f"{run.name}.png" if curves else None, "curves_caption": curves, "history": run.history, "loss_keys": loss_keys,
        "best_epoch": best, "best_row": best_row, "serves": serves,
        "hparams": ", ".join(f"{k}={format_value(v)}" for k, v in sorted(run.identity["hparams"].items())) or "none",
    }


def render_report(suite: Suite | str | None, results: Path, out: Path, *, device: str = "cpu", data_root=None,
                  suite_ref: str | None = None, published=None, models: Path = MODELS, log=print) -> Path:
    """Render the suite's report from its results directory into `out`; returns out/index.html.

    suite: a loaded Suite, a shipped suite name / .toml path, or None for every run in `results`
    (`suite.folder_suite`: no suite to rerun, so no `cat-bench run --suite` commands for its own runs).
    device: where Figure 2's model runs.
    data_root: dataset root for Figure 2's test images (default: $CAT_BENCH_DATA / the user cache).
    suite_ref: how the printed commands name the suite (default: its name if shipped, else its path).
    published: the published numbers (default: cat_bench.paper.load_published()).
    models: the model folders (`cat-bench export`) Figure 2 draws from when a run's checkpoint is not on disk.
    log: where the run folders left out of a folder's report are named.
    """
    results, out = Path(results), Path(out)
    folder = suite is None
    if folder:
        suite, skipped = folder_suite(results)
        for reason in skipped:
            log(f"skipped {reason}")
    elif isinstance(suite, (str, os.PathLike)):
        suite = load_suite(str(suite))
    with RunLock(out):  # one writer of the folder at a time; it removes the temp files of a killed one
        claim(out, "report")  # never over a folder of someone else's files
        build = records.temp_folder(out)
        try:
            _render(suite, results, build, device=device, data_root=data_root, models=Path(models),
                    ref=None if folder else suite_ref or suite_reference(suite), published=published)
            _swap(build, out)
        except BaseException:
            shutil.rmtree(build, ignore_errors=True)
            raise
    return out / "index.html"


def _swap(build: Path, out: Path) -> None:
    """Put the report built in `build` in the place of `out` by two renames, so a reader finds the
    whole old report or the whole new one, never a mix; what the old folder holds that the build does
    not write (its marker, a file of the user's) then moves into the new one. The old folder waits in
    a hidden folder beside, removed once empty of anything kept: a kill in between loses nothing."""
    os.chmod(build, 0o777 & ~_umask())
    aside = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.replaced."))
    os.rename(out, aside / out.name)
    try:
        os.rename(build, out)
    except OSError:
        os.rename(aside / out.name, out)
        aside.rmdir()
        raise
    for entry in os.listdir(aside / out.name):
        if not (out / entry).exists():
            os.rename(aside / out.name / entry, out / entry)
    shutil.rmtree(aside)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _render(suite: Suite, results: Path, out: Path, *, device: str, data_root, models: Path, ref: str | None,
            published) -> None:
    """`render_report`'s work, into the folder `out` (render_report's build folder)."""
    if published is None:
        from cat_bench.paper import load_published

        published = load_published()
    runs, collected = load_runs(suite, results)
    tables = build_tables(published, collected, suite.runs, ref, results=str(results), in_progress=in_progress(runs),
                          models=models)
    figures = paper_figures(runs, out / "figures", ref, device=device, data_root=data_root, results_dir=str(results),
                            models=models)
    boards = leaderboard(runs)
    env = _env()

    _write(out / "style.css", (TEMPLATES / "style.css").read_text())
    run_tpl = env.get_template("run.html")
    for run in runs:
        if run.finished and not run.external:  # an external run's page is its external.json and eval.json
            curves = run_curves(run, out / "runs" / f"{run.name}.png")
            _write(out / "runs" / f"{run.name}.html",
                   run_tpl.render(suite=suite, suite_ref=ref, **_run_page(run, tables, curves)))

    fidelity = _fidelity(runs, out, device, data_root, models)
    if fidelity:
        _write(out / "fidelity.html", env.get_template("fidelity.html").render(suite=suite, suite_ref=ref, fidelity=fidelity))

    counts = {s: sum(r.state == s for r in runs) for s in STATE_LABELS}
    index = env.get_template("index.html").render(
        suite=suite, suite_ref=ref, results=str(results), tables=tables, figures=figures, boards=boards, runs=runs,
        counts=counts, n_finished=sum(r.finished for r in runs), fidelity=fidelity, grid=grid_table(collected),
        chance=at_chance(runs), paper=any(t.suite_rows for t in tables),
        run_command=None if ref is None else command("run", "--suite", ref, "--results", str(results)))
    _write(out / "index.html", index)


def grid_table(collected) -> dict | None:
    """The suite's own grid over seeds: `cat-bench results`' concise table (mean ± std per configuration),
    as {"columns": [...], "rows": [[...], ...]}; None without finished runs."""
    if collected.empty:
        return None
    table = concise(summarize(collected))
    if "eps" in table:
        table["eps"] = table["eps"].map(lambda v: v if isinstance(v, str) else format_eps(v))
    return {"columns": [metric_label(c) for c in table.columns],
            "rows": [[format_value(v) for v in row] for row in table.itertuples(index=False)]}


def at_chance(runs: list[RunRecord]) -> float | None:
    """The chance level (%) when every finished run's natural accuracy is below 1.5 times it (nothing
    learned yet: a report of such runs compares noise); else None."""
    finished = [r for r in runs if r.finished and r.accuracy("natural") is not None]
    if not finished:
        return None
    levels = {r.name: 100 / dataset_info(r.identity["dataset"]).num_classes for r in finished}
    if all(r.accuracy("natural") < 1.5 * levels[r.name] for r in finished):
        return max(levels.values())
    return None


def _fidelity(runs: list[RunRecord], out: Path, device: str, data_root, models: Path) -> dict | None:
    """The Fidelity section's context (None without fidelity runs): runs beside the authors' log, plots,
    and Figure 2 from each run's latest checkpoint when on disk, else from a model folder under `models`
    exported from its configuration."""
    frs = fidelity_runs(runs)
    if not frs:
        return None
    folder = out / "figures"
    accuracy_plot(frs, folder / "fidelity_accuracy.png")
    has_mask = mask_plot(frs, folder / "fidelity_mask.png")
    fig2 = {}
    for fr in frs:
        path = folder / f"fidelity_figure2_{fr.run.name}.png"
        try:
            found = figure2_networks(fr.run.path / records.LAST, fr.run.name, fr.identity, models, device)
            if found is None:
                raise FileNotFoundError(f"no {records.LAST} on disk and no model folder under {models} "
                                        f"exported from this configuration")
            draw_figure2(figure2_panels(fr.identity, found[0], device, data_root), path)
            fig2[fr.run.name] = (f"figures/{path.name}", found[1])
        except Exception as err:  # no checkpoint on disk (committed records only), no dataset
            path.unlink(missing_ok=True)
            fig2[fr.run.name] = (None, f"not drawn: {type(err).__name__}: {err}")
    return {"fruns": frs, "tolerance": TOLERANCE, "mask_image": "figures/fidelity_mask.png" if has_mask else None,
            "accuracy_image": "figures/fidelity_accuracy.png", "figure2": fig2, "fmt": fmt,
            "log": load_authors_log().to_dict("records"), "log_epochs": log_epochs()}


class _CellParser(HTMLParser):
    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.cells: dict[str, dict] = {}
        self._depth = 0
        self._current: tuple[str, dict, list[str]] | None = None

    def handle_starttag(self, tag, attrs):
        if tag in self.VOID:
            return
        if self._current is not None:
            self._depth += 1
            return
        attrs = dict(attrs)
        if "data-cell" in attrs:
            self._current = (attrs["data-cell"], attrs, [])
            self._depth = 1

    def handle_endtag(self, tag):
        if self._current is None or tag in self.VOID:
            return
        self._depth -= 1
        if self._depth == 0:
            cid, attrs, parts = self._current
            self.cells[cid] = {"text": " ".join("".join(parts).split()), "mark": attrs.get("data-mark")}
            self._current = None

    def handle_data(self, data):
        if self._current is not None:
            self._current[2].append(data)


def read_cells(html: str) -> dict[str, dict]:
    """Every element with a data-cell attribute: {cell id: {"text": whitespace-normalized text, "mark": ...}}."""
    parser = _CellParser()
    parser.feed(html)
    parser.close()
    return parser.cells
