"""The paper's tables side by side with the suite's reproduction, and the leaderboard (pure logic, no HTML).

A published row (cat_bench.paper.load_published, long format) names a configuration: method,
dataset, architecture, training eps and, for CAT rows, a (cat-bench's `beta`) and b. It matches
the suite's runs with that method, dataset and architecture, the same training eps (numerically,
so "8/255" matches 0.0313...), and every method hyperparameter at the value the row implies (a and
b as printed, all others at the dataset family's defaults). Schedule settings (epochs, n_train,
...) are not part of the match: a short run is still a reproduction attempt of the row. When runs
of several schedules match, the group with the most seeds (then the most epochs, then the most
training images) is shown.

Reproduced = mean and std (ddof=1) over the seeds of that group, from cat_bench.results'
`collect` and `summarize`. Each table has a bar (`BARS`, else `DEFAULT_BAR`): how many points the
natural column and the robust columns may differ from the published number. A cell is marked
"above" / "below" when |reproduced - published| > max(published std, the bar), else "within"; a
row's verdict is "reproduced" when every published cell is within, "not reproduced" when it was
run but a cell is outside or not evaluated, else "not run". "Avg" is the paper's: the mean of
natural and every robust accuracy of the row (the table's other columns), per run, then over
seeds, and only when every run was evaluated on all of them. A published row without a finished
run shows "not run yet" (or "in progress", with how far its unfinished runs have trained and the best
epoch so far on the selection measurement) and the exact `cat-bench run --suite ... --only ...`
command that trains (or resumes) and evaluates it.
"""

from __future__ import annotations

import functools
import json
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd

from cat_bench.checks import as_flags
from cat_bench.data import dataset_info
from cat_bench.errors import UsageError
from cat_bench.methods import METHODS
from cat_bench.paper import Target, isnan, same_value
from cat_bench.presets import EVALUATION_NOTE, format_eps, format_value
from cat_bench import eval_attacks
from cat_bench.results import WORST, in_attack_order, summarize
from cat_bench.suite import SUITES, RunSpec, filter_runs, load_suite
from cat_bench.shell import command

from .runs import RunRecord

SUMMARY_LABELS = {"avg": "Avg", "worst-case": "Worst case"}  # the columns besides the attacks (cat_bench.eval_attacks)


def metric_label(name: str) -> str:
    """A column's label: an attack's from the registry ("PGD-20"), "Avg", "Worst case", else the name."""
    return SUMMARY_LABELS.get(name) or eval_attacks.label(name)


def metric_order() -> list[str]:
    """The paper's table columns in order: the attacks its tables report, then Avg."""
    return [*eval_attacks.paper_columns(), "avg"]
ARCH_LABELS = {"smallcnn": "SmallCNN", "madry-cnn": "Madry CNN", "trades-smallcnn": "TRADES SmallCNN", "preact-resnet18": "PreAct ResNet-18", "wrn-34-10": "WRN-34-10"}
DATASET_LABELS = {"mnist": "MNIST", "mnist-mini": "MNIST-mini", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}
TABLE_CAPTIONS = {
    "1": "MNIST, tested at eps 0.3: natural accuracy and accuracy under PGD-20 and PGD-100 (%). CAT: its "
         "SmallCNN; AT and TRADES: the networks of their official MNIST scripts (Madry et al.'s CNN, TRADES' "
         "SmallCNN; the paper does not say which it used). Paper protocol: CAT trains without the [0,1] clip, as "
         "its MNIST code does.",
    "2": "CIFAR-10, PreAct ResNet-18, tested at eps 8/255 (CW∞ at 0.031); CAT rows are mean ± std over "
         "5 runs in the paper; Avg is the mean of natural and all robust accuracies.",
    "3": "CIFAR-10, WideResNet-34-10, the same columns as Table 2. The paper's CATcent (b=0.3) row lost its "
         "natural accuracy.",
    "4": "CIFAR-10, accuracy under the black-box Square attack (eps 8/255), PreAct ResNet-18 and WRN-34-10.",
    "7": "CIFAR-100, PreAct ResNet-18, tested at eps 8/255 (appendix D).",
    "8": "CIFAR-10, PreAct ResNet-18: CAT's a (beta) with b = 0.05, and b with a = 5; natural and PGD-20 "
         "accuracy, single runs (appendix E).",
}


def caption(table_id: str, dataset: str) -> str:
    """A table's caption with the protocol notes that hold for every row: how the dataset's rows are
    evaluated (presets.EVALUATION_NOTE, what `list methods` prints) and which methods train the paper's
    network where their own script builds another (each method's SCRIPT_NETWORK)."""
    family = dataset_info(dataset).family
    notes = [f"Evaluation: {EVALUATION_NOTE[family]}."]
    scripts = [f"{name}: its script builds {cls.SCRIPT_NETWORK[family]}" for name, cls in METHODS.items()
               if family in cls.SCRIPT_NETWORK]
    if scripts:
        notes.append("Networks: every row trains the network named in the title, with its method's script "
                     f"settings, where the script itself differs: {'; '.join(scripts)}.")
    return " ".join([TABLE_CAPTIONS.get(table_id, ""), *notes]).strip()


@dataclass(frozen=True)
class Bar:
    """How far a reproduced mean may lie from the published one, in points, and still count as reproduced:
    `natural` for the natural column, `robust` for every other column (robust accuracies, Avg). A
    published std larger than the bar widens it for that cell."""

    natural: float
    robust: float
    why: str

    def points(self, metric: str) -> float:
        return self.natural if metric == "natural" else self.robust

    @property
    def text(self) -> str:
        """The bar in words, with why it is what it is."""
        if self.natural == self.robust:
            return f"±{self.natural:g} point{'s' if self.natural != 1 else ''}, or the published std where larger"
        return f"±{self.natural:g} points natural, ±{self.robust:g} points robust ({self.why})"


# The rule of every table without its own bar: 1 point, or the published std where it is larger
# (CIFAR rows of Tables 2-4 and 7 print stds of 0.2-0.8 over 5 runs).
DEFAULT_BAR = Bar(1.0, 1.0, "the rule of the tables with published stds")
BARS = {
    # Table 1 (MNIST) prints one decimal, so its numbers are precise to ~0.1 point, and its natural
    # accuracies all lie in 99.1-99.3: the 1-point default would pass any natural accuracy above 98.
    # The chosen bar: 0.3 points natural (three times the printed precision), 1.5 points for every
    # robust column (robust accuracies move more between seeds; the column spans 93.4-97.1 for PGD-20).
    "1": Bar(0.3, 1.5, "MNIST numbers are printed to 0.1 point"),
}
VERDICTS = ("reproduced", "not reproduced", "not run")


def fmt_num(v: float, digits: int = 2) -> str:
    return f"{v:.{digits}f}"


def fmt_published(v: float) -> str:
    """A published number as printed: one decimal at least, two where the paper has them (55.12)."""
    text = f"{v:.2f}"
    return text[:-1] if text.endswith("0") else text


def _run_command(suite_ref: str, filters: Sequence[str], results: str | None = None) -> str:
    return command("run", "--suite", suite_ref, *(["--results", results] if results else []), "--only", *filters)


def _train_command(t: Target) -> str:
    sets = ["--set", *(f"{k}={v}" for k, v in t.overrides.items())] if t.overrides else []
    return command("train", "--method", t.method, "--dataset", t.dataset, "--arch", t.arch, "--eps", t.eps, *sets)


def exact_filters(target: Target, specs: Sequence[RunSpec]) -> list[str]:
    """The row's filters, plus hyperparameters at their defaults where the suite also has runs that the
    plain filters would catch but that are not this row (e.g. ablation=none beside Figure 4's A1/A2)."""
    filters = target.filters()
    extra = [s for s in filter_runs(specs, filters) if not target.matches(s.config)]
    named = {f.partition("=")[0] for f in filters}
    for key, value in target.hparams.items():
        if not extra:
            break
        if key in named or isnan(value):
            continue
        if any(not same_value(s.config["hparams"].get(key), value) for s in extra):
            filters.append(f"{key}={format_value(value)}")
            extra = [s for s in filter_runs(specs, filters) if not target.matches(s.config)]
    return filters


@functools.lru_cache(maxsize=None)
def _shipped_suite(name: str):
    return load_suite(name)


def locate_shipped(target: Target, exclude: str | None = None) -> tuple[str, tuple[RunSpec, ...]] | None:
    """The first shipped suite with a run of this row: suites named after the dataset first, `paper` last."""
    names = sorted((n for n in SUITES if n != exclude),
                   key=lambda n: (not n.startswith(target.dataset), n == "paper", n))
    for name in names:
        try:
            suite = _shipped_suite(name)
        except UsageError:
            continue
        if any(target.matches(s.config) for s in suite.runs):
            return name, suite.runs
    return None


def command_for(target: Target, specs: Sequence[RunSpec], suite_ref: str | None,
                locate: Callable[[Target], tuple[str, Sequence[RunSpec]] | None] = locate_shipped,
                results: str | None = None) -> tuple[str, str | None]:
    """The exact command that trains and evaluates this row's runs (into `results`, when given), and a note
    when it is not this suite's. suite_ref None: a folder of runs, no suite (a shipped suite fills the row)."""
    if suite_ref is not None and any(target.matches(s.config) for s in specs):
        return _run_command(suite_ref, exact_filters(target, specs), results), None
    found = locate(target)
    if found is None:
        return _train_command(target), ("no shipped suite trains this configuration; train it, then evaluate "
                                        "with cat-bench eval RUN_DIR")
    name, runs = found
    note = "the shipped suite" if suite_ref is None else "not in this suite; the shipped suite"
    return _run_command(name, exact_filters(target, runs), results), f"{note} {name!r} has it"


# ---------------------------------------------------------------------------------------------
# Cells, rows, tables


@dataclass
class Stat:
    mean: float
    std: float  # NaN for one seed
    n: int  # runs with this value


@dataclass
class Cell:
    """One (row, column) of a paper table: reproduced, published and their difference."""

    id: str  # data-cell attribute: "table1/<row>/<metric>" (+ "@<arch>" in tables with several architectures)
    metric: str
    arch: str
    status: str  # "reproduced", "not-run", "in-progress" (no finished run yet), "not-evaluated", "absent" (no
    # published value and no run)
    n_group: int = 0  # seeds in the reproduced group
    rep: Stat | None = None
    pub_mean: float = math.nan
    pub_std: float = math.nan
    diff: float | None = None
    mark: str | None = None  # "above", "below", "within"; None without a difference
    bar: float = DEFAULT_BAR.natural  # the table's bar for this column (points)

    @property
    def rep_text(self) -> str:
        if self.status == "not-run":
            return "not run yet"
        if self.status == "in-progress":
            return "in progress"
        if self.rep is None:
            return "not evaluated" if self.status == "not-evaluated" else "—"
        text = fmt_num(self.rep.mean)
        if not math.isnan(self.rep.std):
            text += f" ± {fmt_num(self.rep.std)}"
        return text

    @property
    def seeds_text(self) -> str:
        if self.rep is None:
            return ""
        if self.rep.n < self.n_group:
            return f"({self.rep.n} of {self.n_group} seeds)"
        return f"({self.rep.n} seed{'s' if self.rep.n != 1 else ''})"

    @property
    def pub_text(self) -> str:
        if math.isnan(self.pub_mean):
            return "not printed"
        text = fmt_published(self.pub_mean)
        if not math.isnan(self.pub_std):
            text += f" ± {fmt_published(self.pub_std)}"
        return text

    @property
    def diff_text(self) -> str:
        if self.diff is None:
            return ""
        return f"{self.diff:+.2f}"

    @property
    def tolerance(self) -> float:
        return max(0.0 if math.isnan(self.pub_std) else self.pub_std, self.bar)


@dataclass
class RowTarget:
    """What one row shows for one architecture: the runs behind it, or the command to make them."""

    arch: str
    target: Target
    runs: list[str] = field(default_factory=list)  # run names averaged into the row, by seed
    seeds: list[int] = field(default_factory=list)  # their seeds
    pending: int = 0  # the suite's runs of this row that are not finished
    command: str | None = None  # to fill (or complete) the row
    note: str | None = None
    other_groups: int = 0  # further schedules that matched but are not shown
    in_suite: bool = False  # the suite has runs for it (finished or not)
    progress: list[str] = field(default_factory=list)  # how far the row's unfinished runs have trained

    @property
    def seeds_text(self) -> str:
        """"1 seed", "3 seeds", with the suite's unfinished runs of the row ("1 seed, 2 more in the suite")."""
        text = f"{len(self.runs)} seed{'s' if len(self.runs) != 1 else ''}"
        return text + (f", {self.pending} more in the suite" if self.pending else "")


@dataclass
class AttackCheck:
    """AutoAttack beside PGD-100 on the same test examples, from the card of a model shipped from one of the
    row's runs (`cat-bench eval FOLDER --attacks pgd100,autoattack --record`); the paper has no such column.
    `autoattack` is None when the folder's card has no such evaluation (then `command` measures it)."""

    model: str  # the model folder's name
    seed: int
    n: int = 0
    autoattack: float | None = None  # accuracy, %
    pgd100: float | None = None
    only_autoattack: int = 0  # examples AutoAttack breaks that PGD-100 leaves
    only_pgd100: int = 0
    flags: list[str] = field(default_factory=list)
    command: str = ""

    @property
    def verdict(self) -> str:
        if self.autoattack is None:
            return "not measured"
        return "PGD overstates robustness" if "PGD overstates robustness" in self.flags else "PGD-100 confirmed"

    @property
    def text(self) -> str:
        if self.autoattack is None:
            return f"not measured ({self.model})"
        return (f"{fmt_num(self.autoattack)} vs PGD-100 {fmt_num(self.pgd100)} ({self.autoattack - self.pgd100:+.2f}) "
                f"on the first {self.n:,} test examples, seed {self.seed}: AutoAttack breaks {self.only_autoattack} "
                f"that PGD-100 leaves, PGD-100 {self.only_pgd100} that it leaves ({self.model})")


def attack_checks(run_names: Sequence[str], seeds: Sequence[int], identities: Mapping[str, dict],
                  models) -> list[AttackCheck]:
    """The AutoAttack-beside-PGD-100 check of each model shipped from these runs: the card's evaluation with
    both attacks on the most examples, or "not measured" with the command that measures it."""
    from cat_bench import shipped

    checks = []
    for name, seed in zip(run_names, seeds):
        for folder, card in shipped.exported_from(name, identities[name], models):
            found = [e for e in card.get(shipped.EVALUATIONS, []) if {"autoattack", "pgd100"} <= set(e["attacks"])]
            check = AttackCheck(folder.name, seed, command=command(
                "eval", str(folder), "--attacks", "pgd100,autoattack", "--n-examples", "1000", "--record"))
            if found:
                entry = max(found, key=lambda e: e["key"]["n_examples"])
                check.n = entry["key"]["n_examples"]
                check.autoattack = 100 * entry["attacks"]["autoattack"]["accuracy"]
                check.pgd100 = 100 * entry["attacks"]["pgd100"]["accuracy"]
                check.only_autoattack, check.only_pgd100 = shipped.attack_disagreement(entry, "autoattack", "pgd100")
                check.flags = [f["flag"] for f in entry["flags"]]
            checks.append(check)
    return checks


@dataclass
class Row:
    id: str  # the printed label, e.g. "CATcent (b=0.05)"
    label: str
    cells: list[Cell]
    targets: list[RowTarget]
    attack_checks: list[AttackCheck] = field(default_factory=list)  # AutoAttack beside PGD-100 (shipped models)

    @property
    def in_suite(self) -> bool:
        return any(rt.in_suite for rt in self.targets)

    @property
    def in_progress(self) -> bool:
        """Some of the row's runs have trained epochs but are not finished."""
        return any(rt.progress for rt in self.targets)

    @property
    def status(self) -> str:
        if any(c.status == "reproduced" for c in self.cells):
            return "reproduced"
        return "not-run" if any(c.status in ("not-run", "in-progress") for c in self.cells) else "other"

    @property
    def verdict(self) -> str:
        """"reproduced" (every published cell within the bar), "not reproduced" (run, but a cell outside
        the bar or not evaluated) or "not run"."""
        published = [c for c in self.cells if not math.isnan(c.pub_mean)]
        if not any(c.status in ("reproduced", "not-evaluated") for c in published):
            return "not run"
        return "reproduced" if all(c.mark == "within" for c in published) else "not reproduced"

    def verdict_text(self, columns: Sequence[tuple[str, str, str]]) -> str:
        """The verdict with its numbers, e.g. "reproduced, 1 seed: Natural 99.05 vs 99.1 (-0.05), ..."."""
        detail = self.verdict_detail(columns)
        return f"{self.verdict}, {detail}" if detail else self.verdict

    def verdict_detail(self, columns: Sequence[tuple[str, str, str]]) -> str:
        """What the verdict rests on: how many seeds, then each published cell as reproduced vs published
        (difference), the cells outside the bar named with the bar; "" for a row not run."""
        if self.verdict == "not run":
            return ""
        headers = {(arch, metric): header for arch, metric, header in columns}
        parts = []
        for c in self.cells:
            if math.isnan(c.pub_mean):
                continue
            name = headers[(c.arch, c.metric)]
            if c.rep is None:
                parts.append(f"{name} not evaluated")
                continue
            parts.append(f"{name} {fmt_num(c.rep.mean)} vs {fmt_published(c.pub_mean)} ({c.diff_text}"
                         f"{'' if c.mark == 'within' else f', outside ±{c.tolerance:g}'})")
        seeds = "; ".join(rt.seeds_text for rt in self.targets if rt.runs)
        return f"{seeds}: {', '.join(parts)}"


@dataclass
class Table:
    id: str  # "1"
    title: str  # "Table 1"
    caption: str
    columns: list[tuple[str, str, str]]  # (arch, metric, header)
    rows: list[Row]
    bar: Bar = DEFAULT_BAR

    @property
    def key(self) -> str:
        return f"table{self.id}"

    def counts(self, rows: Sequence[Row] | None = None) -> dict[str, int]:
        """How many rows (all of the table's by default) have each verdict, in VERDICTS order."""
        rows = self.rows if rows is None else rows
        return {v: sum(r.verdict == v for r in rows) for v in VERDICTS}

    @property
    def suite_rows(self) -> list[Row]:
        """The rows this suite has runs for (the report shows them first)."""
        return [r for r in self.rows if r.in_suite]

    @property
    def other_rows(self) -> list[Row]:
        """The rows other suites fill (the report collapses them into its "fill the rest" list)."""
        return [r for r in self.rows if not r.in_suite]


def _group_key(config: dict) -> str:
    return json.dumps({k: v for k, v in config.items() if k != "seed"}, sort_keys=True)


def _choose_group(matched: list[RunSpec], collected: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The finished runs of one schedule (most seeds, then most epochs, then most training images)."""
    groups: dict[str, list[str]] = {}
    for spec in matched:
        groups.setdefault(_group_key(spec.config), []).append(spec.name)
    best, best_rank = None, None
    for names in groups.values():
        df = collected[collected["run"].isin(names)]
        if df.empty:
            continue
        rank = (len(df), int(df["epochs"].max()), float(df["n_train"].fillna(math.inf).max()))
        if best_rank is None or rank > best_rank:
            best, best_rank = df, rank
    n_groups = sum(collected["run"].isin(names).any() for names in groups.values())
    return (best if best is not None else collected.iloc[0:0]), max(n_groups - 1, 0)


def build_tables(published: pd.DataFrame, collected: pd.DataFrame, specs: Sequence[RunSpec], suite_ref: str | None,
                 locate: Callable[[Target], tuple[str, Sequence[RunSpec]] | None] = locate_shipped,
                 results: str | None = None, in_progress: Mapping[str, Sequence[dict]] | None = None,
                 models=None) -> list[Table]:
    """Every published table with the suite's reproduction.

    published: load_published()'s long format; collected: cat_bench.results.collect of the suite's run
    directories (finished runs); specs: the suite's RunSpecs (their configs identify the runs);
    suite_ref: how commands name the suite (None: a folder of runs); locate: finds a shipped suite for rows
    this one lacks; results: the results directory the printed commands name; in_progress: the history
    rows of unfinished runs, by run name (`progress_text` says how far each has come); models: the model
    folders (`cat-bench export`) whose cards give each row's AutoAttack check (`attack_checks`), None for none.
    """
    in_progress = in_progress or {}
    if "run" not in collected.columns:
        collected = collected.assign(run=pd.Series(dtype=str))
    finished = set(collected["run"])
    tables = []
    for table_id in dict.fromkeys(published["table"]):
        pub = published[published["table"] == table_id]
        # Column groups: one per architecture (Table 4's ResNet / WRN columns); MNIST's rows each name
        # their own method's network in one group.
        pub = pub.assign(col=pub["arch"].where(pub["dataset"] != "mnist", "mnist"))
        archs = list(dict.fromkeys(pub["col"]))
        present = set(pub["metric"])
        order = metric_order()
        metrics = [m for m in order if m in present] + sorted(present - set(order))
        columns = [(arch, m, metric_label(m) + (f" · {ARCH_LABELS.get(arch, arch)}" if len(archs) > 1 else ""))
                   for arch in archs for m in metrics if ((pub["col"] == arch) & (pub["metric"] == m)).any()
                   or len(archs) == 1]
        bar = BARS.get(table_id, DEFAULT_BAR)
        rows = []
        for label in dict.fromkeys(pub["row"]):
            lines = pub[pub["row"] == label]
            row_targets: dict[str, RowTarget] = {}
            stats: dict[str, tuple[pd.DataFrame, pd.Series | None]] = {}
            for col in dict.fromkeys(lines["col"]):
                first = lines[lines["col"] == col].iloc[0]
                target = Target(first["method"], first["dataset"], first["arch"], first["eps"],
                                float(first["eps_value"]), float(first["a"]), float(first["b"]))
                matched = [s for s in specs if target.matches(s.config)]
                group, others = _choose_group(matched, collected)
                seed_of = {s.name: s.config["seed"] for s in matched}
                names = sorted(group["run"], key=lambda n: (seed_of[n], n))
                rt = RowTarget(target.arch, target, runs=names, seeds=[seed_of[n] for n in names], other_groups=others,
                               in_suite=bool(matched))
                rt.pending = sum(s.name not in finished for s in matched)
                rt.progress = [progress_text(s.config, in_progress[s.name]) for s in matched
                               if s.name not in finished and in_progress.get(s.name)]
                if group.empty or rt.pending:
                    rt.command, rt.note = command_for(target, specs, suite_ref, locate, results)
                row_targets[col] = rt
                summary = summarize(group).iloc[0] if not group.empty else None
                stats[col] = (group, summary)
            cells = []
            for arch, metric, _ in columns:
                cid = f"table{table_id}/{label}/{metric}" + (f"@{arch}" if len(archs) > 1 else "")
                line = lines[(lines["col"] == arch) & (lines["metric"] == metric)]
                pub_mean = float(line["mean"].iloc[0]) if len(line) else math.nan
                pub_std = float(line["std"].iloc[0]) if len(line) else math.nan
                if arch not in row_targets:
                    cells.append(Cell(cid, metric, arch, "absent", pub_mean=pub_mean, pub_std=pub_std))
                    continue
                group, summary = stats[arch]
                if group.empty:
                    cells.append(Cell(cid, metric, arch, "in-progress" if row_targets[arch].progress else "not-run",
                                      pub_mean=pub_mean, pub_std=pub_std))
                    continue
                row_metrics = [m for a, m, _ in columns if a == arch and m != "avg"]
                rep = _stat(group, summary, metric, row_metrics)
                cell = Cell(cid, metric, arch, "reproduced" if rep else "not-evaluated", n_group=len(group),
                            rep=rep, pub_mean=pub_mean, pub_std=pub_std, bar=bar.points(metric))
                if rep is not None and not math.isnan(pub_mean):
                    cell.diff = rep.mean - pub_mean
                    cell.mark = ("above" if cell.diff > cell.tolerance else
                                 "below" if cell.diff < -cell.tolerance else "within")
                cells.append(cell)
            row = Row(label, label, cells, list(row_targets.values()))
            if models is not None:
                identities = {s.name: s.config for s in specs}
                row.attack_checks = [c for rt in row.targets
                                     for c in attack_checks(rt.runs, rt.seeds, identities, models)]
            rows.append(row)
        tables.append(Table(table_id, f"Table {table_id}", caption(table_id, pub["dataset"].iloc[0]), columns, rows,
                            bar))
    return tables


def progress_text(config: dict, history: Sequence[dict]) -> str:
    """How far an unfinished run has trained, e.g. "seed 0: 7 of 40 epochs trained; selected so far: epoch 6,
    natural 98.44, PGD-20 94.07 (the per-epoch selection measurement on all test examples)"."""
    last = history[-1]
    best = next((h for h in history if h["epoch"] == last.get("best_epoch")), last)
    selection = config["selection"]
    steps = selection.get("attack", {}).get("steps")
    attack = f"PGD-{steps}" if steps else "robust"
    return (f"seed {config['seed']}: {last['epoch']} of {config['schedule']['epochs']} epochs trained; selected so "
            f"far: epoch {best['epoch']}, natural {100 * best['nat_acc']:.2f}, {attack} {100 * best['rob_acc']:.2f} "
            f"(the per-epoch selection measurement on {selection.get('n') or 'all'} {selection.get('on', 'test')} "
            f"examples)")


def _stat(group: pd.DataFrame, summary: pd.Series, metric: str, row_metrics: list[str]) -> Stat | None:
    """Mean, std and count of one metric over the group's seeds (Avg: per run over the row's columns)."""
    if metric == "avg":
        if any(m not in group.columns or group[m].isna().any() for m in row_metrics):
            return None
        per_run = group[row_metrics].mean(axis=1)
        return Stat(float(per_run.mean()), float(per_run.std(ddof=1)) if len(per_run) > 1 else math.nan,
                    len(per_run))
    if metric not in group.columns or group[metric].isna().all():
        return None
    return Stat(float(summary[f"{metric}_mean"]), float(summary[f"{metric}_std"]), int(group[metric].notna().sum()))


def cells_frame(tables: Sequence[Table]) -> pd.DataFrame:
    """Every cell as one line: table, row, metric, arch, status, reproduced mean/std/n, published, diff, mark."""
    out = []
    for t in tables:
        for r in t.rows:
            for c in r.cells:
                out.append({"table": t.id, "row": r.id, "metric": c.metric, "arch": c.arch, "cell": c.id,
                            "status": c.status, "rep_mean": c.rep.mean if c.rep else math.nan,
                            "rep_std": c.rep.std if c.rep else math.nan, "n": c.rep.n if c.rep else 0,
                            "pub_mean": c.pub_mean, "pub_std": c.pub_std,
                            "diff": math.nan if c.diff is None else c.diff, "mark": c.mark})
    return pd.DataFrame(out)


# ---------------------------------------------------------------------------------------------
# Leaderboard


@dataclass
class Entry:
    rank: int
    run: RunRecord
    score: float | None  # accuracy (%) the run is ranked by
    ranked_by: str | None  # "autoattack" or the strongest attack run
    accuracies: dict[str, float]
    flags: list[dict]
    settings: str = ""  # the settings that tell this run apart from the board's others, "epochs=10, b=0.3"


@dataclass
class Board:
    dataset: str
    attacks: list[str]  # robust attacks present among these runs, in evaluation order
    entries: list[Entry]
    references: list[dict] = field(default_factory=list)  # published RobustBench entries, never ranked with entries


REFERENCE_DATASET = "cifar10"  # RobustBench's CIFAR-10 Linf entries (cat_bench.references)


def reference_rows(runs: Sequence[RunRecord]) -> list[dict]:
    """RobustBench's published entries for the CIFAR-10 networks the suite's runs use, each marked where its
    eps differs from the eps those runs were evaluated at (0.031 beside 8/255: another threat model).

    A network with no evaluated run is compared with the dataset's test eps (8/255)."""
    from cat_bench.references import ROBUSTBENCH_ARCH, eps_mismatch, load_references

    archs = [a for a in dict.fromkeys(r.spec.config["arch"] for r in runs if r.spec.config["dataset"] == REFERENCE_DATASET
                                      and not r.external) if a in ROBUSTBENCH_ARCH.values()]
    rows = []
    for arch in archs:
        evaluated = {run.evaluation["key"]["eps"] for run in runs if run.finished and run.identity["arch"] == arch
                     and run.identity["dataset"] == REFERENCE_DATASET} or {dataset_info(REFERENCE_DATASET).test_eps}
        for ref in load_references(arch).to_dict("records"):
            differ = sorted(e for e in evaluated if eps_mismatch(e, ref["eps_value"]))
            rows.append({**ref, "eps_mismatch": bool(differ),
                         "mismatch_detail": (f"evaluated at eps {ref['eps']}, the runs at "
                                             f"{', '.join(format_eps(e) for e in differ)}: another threat model")
                                            if differ else ""})
    return rows


def _method(run: RunRecord):
    """The run's registered method class; None for an external run (or one not finished)."""
    return METHODS.get((run.identity or {}).get("method"))


def health_flags(run: RunRecord) -> list[dict]:
    """The run's health flags (its method's `health_flags` over its history); none for an external run."""
    method = _method(run)
    return method.health_flags(run.history) if method is not None else []


def health_trend(run: RunRecord) -> dict | None:
    """What the run page shows of the method's traced value per epoch: {"label", "band", "means"}; None for a
    method that traces nothing (or a run whose history has none of it)."""
    method = _method(run)
    key = method.TRACE_KEY if method is not None else None
    means = [h["train"][key] for h in run.history if key in h.get("train", {})] if key else []
    if not means:
        return None
    band = method.HEALTH_BAND
    return {"label": method.TRACE_LABEL or key, "means": means,
            "band": f"[{band[0]:g}, {band[1]:g}]" if band is not None else None}


def _settings(identity: dict) -> dict[str, str]:
    """The run settings a reader compares runs by, beside method, network, eps and seed (their own columns)."""
    schedule = identity["schedule"]
    return {"epochs": str(schedule["epochs"]), "batch_size": str(schedule.get("batch_size")),
            "n_train": str(identity.get("n_train")), "schedule": str(schedule["name"]),
            "precision": str(identity["precision"]),
            "select_on": str(identity.get("selection", {}).get("on"))}


def differing_settings(runs: Sequence[RunRecord]) -> dict[str, str]:
    """Per run, "key=value, ..." of the settings that differ between the runs, and of the hyperparameters
    that differ between runs of one method (another method's hyperparameters say nothing)."""
    trained = [r for r in runs if "external" not in r.identity]
    flat = {r.name: _settings(r.identity) for r in trained}
    keys = [k for k in (next(iter(flat.values()), {})) if len({f[k] for f in flat.values()}) > 1]
    by_method: dict[str, list[RunRecord]] = {}
    for r in trained:
        by_method.setdefault(r.identity["method"], []).append(r)
    out = {r.name: f"external {r.identity['external']['kind']}, not trained here" for r in runs
           if "external" in r.identity}
    for method, group in by_method.items():
        hp = sorted({k for r in group for k in r.identity["hparams"]})
        hp = [k for k in hp if len({format_value(r.identity["hparams"].get(k)) for r in group}) > 1]
        for r in group:
            parts = [f"{k}={flat[r.name][k]}" for k in keys]
            parts += [f"{k}={format_value(r.identity['hparams'].get(k))}" for k in hp]
            out[r.name] = ", ".join(parts)
    return out


def threat_model(run: RunRecord) -> tuple:
    """What a run's numbers measure: the evaluation's eps, its test examples, and whether its attacks
    keep inputs in [0, 1] (clip)."""
    ev = run.evaluation
    clip = sorted({str(a["settings"].get("clip")) for a in ev.get("attacks", {}).values() if "settings" in a})
    return round(ev["key"]["eps"], 9), ev["key"]["n_examples"], "/".join(clip)


def unequal_threat_models(runs: Sequence[RunRecord]) -> dict[str, list[dict]]:
    """A flag for each run measured under another threat model than most runs ranked beside it
    (`threat_model`): its numbers do not compare with theirs."""
    models = {r.name: threat_model(r) for r in runs if r.evaluation.get("key")}
    if len(set(models.values())) < 2:
        return {}
    common = Counter(models.values()).most_common(1)[0][0]
    words = ("eps", "examples", "clip")
    return {name: [{"flag": "threat model differs", "detail": "; ".join(
        f"{w} {mine} (most runs here: {theirs})" for w, mine, theirs in zip(words, model, common) if mine != theirs)}]
        for name, model in models.items() if model != common}


def leaderboard(runs: Sequence[RunRecord]) -> list[Board]:
    """Every evaluated run, one board per dataset, ranked by AutoAttack accuracy, else by its lowest
    robust accuracy among the attacks it was evaluated on (runs with no robust attack come last)."""
    by_dataset: dict[str, list[RunRecord]] = {}
    for run in runs:
        if run.finished:
            by_dataset.setdefault(run.identity["dataset"], []).append(run)
    references = reference_rows(runs)
    if references:
        by_dataset.setdefault(REFERENCE_DATASET, [])
    boards = []
    for dataset in sorted(by_dataset):
        scored = []
        for run in by_dataset[dataset]:
            acc = {k: 100 * v["accuracy"] for k, v in run.evaluation.get("attacks", {}).items()}
            if "autoattack" in acc:
                by, score = "autoattack", acc["autoattack"]
            else:
                robust = {k: v for k, v in acc.items() if k != "natural"}
                by = min(robust, key=lambda k: (robust[k], eval_attacks.attack_order().index(k) if k in eval_attacks.attack_order() else 99),
                         default=None)
                score = robust[by] if by else None
            if WORST in run.evaluation:  # correct under every attack run (per-example records); not a ranking key
                acc[WORST] = 100 * run.evaluation[WORST]["accuracy"]
            scored.append((run, score, by, acc))
        scored.sort(key=lambda s: (s[1] is None, -(s[1] or 0.0), -(s[3].get("natural") or 0.0), s[0].name))
        present = {k for _, _, _, acc in scored for k in acc if k != "natural"}
        attacks = in_attack_order(present)
        settings = differing_settings([run for run, *_ in scored])
        unequal = unequal_threat_models([run for run, *_ in scored])
        entries = [Entry(i, run, score, by, acc, run.evaluation.get("flags", []) + as_flags(run.evaluation.get("checks", []))
                         + health_flags(run) + unequal.get(run.name, []), settings[run.name])
                   for i, (run, score, by, acc) in enumerate(scored, start=1)]
        board = Board(dataset, attacks, entries)
        if dataset == REFERENCE_DATASET and references:
            board.references = references
            if "autoattack" not in board.attacks:  # where the references' robust accuracy goes
                board.attacks = in_attack_order(present | {"autoattack"})
        boards.append(board)
    return boards
