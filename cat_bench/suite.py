"""Benchmark suites as declarative TOML files, one file per suite (docs/method.md s3-s5).

The shipped suites live in `cat_bench/suites/`; `load_suite` also reads a user's own file.
Schema (smoke.toml carries the same description):

    description = "..."               required: what the suite is for
    include = ["mnist", ...]          optional: shipped suite names, or .toml paths relative to this
                                      file, whose runs belong to this suite
    log = ["tensorboard"]             optional: trackers `cat-bench run` writes every run's curves to
                                      (as --log; the command line's --log wins)
    [slurm]                           optional: what `run --executor slurm` asks for each job, as its
      partition = "gpu", mem = "64G"  flags (cat_bench/settings.py SLURM_OPTIONS; the command line wins
      [slurm.sbatch]                  per key); [slurm.sbatch] passes any other sbatch option through,
      account = "lab", qos = "high"   as --slurm KEY=VALUE does
    [defaults]                        optional: any block key, used by every block that does not set it
    [[runs]]                          a block: methods x eps x seeds x hparam grid, one training run each
      label = "Table 2"               the paper table or figure served (default: "<file> block <n>")
      methods = ["natural", "at"]     required: method names (`cat-bench list methods`)
      dataset = "cifar10"             required
      eps = ["8/255", 0.3]            required: training eps, numbers or fractions
      seeds = [0, 1, 2, 3, 4]         optional: default [0]
      hparams = {beta = 5, b = [0.05, 0.1]}   optional: value or list of values (a list is a grid axis)
      precision = "bf16", epochs = 2  optional: any run option (cat_bench.options; `cat-bench list
                                      options` prints each with what it allows and its default)
      attacks = ["natural", "pgd20"]  required: evaluation attacks, in order (docs/method.md s4)
      n_examples = 500                optional: first N test examples; default, the full test set

Every expanded run goes through `resolve_config`, so a suite names exactly the run directories the
CLI's `train` makes. Runs that resolve to the same config (e.g. Table 2's CATcent b=0.05 seed 0
and Table 8's a=5 b=0.05) are one run serving every block that asks for it.
"""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from cat_bench import records
from cat_bench.data import dataset_info
from cat_bench.errors import CorruptRecord, UsageError
from cat_bench.methods import METHODS, get_method
from cat_bench.options import OPTIONS, RUN_OPTIONS
from cat_bench.eval_attacks import attacks_for
from cat_bench.presets import format_eps, parse_eps
from cat_bench.settings import check_slurm_table
from cat_bench.config import resolve_config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SUITES_DIR = Path(__file__).resolve().parent / "suites"
SUITES: tuple[str, ...] = tuple(sorted(p.stem for p in SUITES_DIR.glob("*.toml")))


@dataclass(frozen=True)
class RunSpec:
    """One training run of a suite and the evaluation it gets."""

    config: dict  # resolve_config(...) output: the training run's identity
    attacks: tuple[str, ...]  # evaluation attacks, in the order to run them
    n_examples: int | None  # first N test examples; None = the full test set
    labels: tuple[str, ...]  # every block label this run serves
    folder: str | None = None  # its path inside the results directory when not runs/NAME (`train --out`)

    @property
    def name(self) -> str:
        """The run directory's name, as `cat-bench train` chooses it (or as `--out` named it)."""
        return Path(self.folder).name if self.folder else records.run_name(self.config)


@dataclass(frozen=True)
class Suite:
    """A loaded suite: its runs, merged across blocks and includes, in the order first named."""

    name: str
    path: Path
    description: str
    runs: tuple[RunSpec, ...]
    log: tuple[str, ...] = ()  # trackers every run of `cat-bench run` writes to (the file's `log` key)
    slurm: dict = field(default_factory=dict)  # the file's [slurm] table (cat_bench.settings.check_slurm_table)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_scalar(v: Any) -> bool:
    return isinstance(v, (str, float)) or _is_int(v)


def _list_of(pred: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, list) and len(v) > 0 and all(pred(x) for x in v)


def _hparam_table(v: Any) -> bool:
    return isinstance(v, dict) and all(_is_scalar(x) or _list_of(_is_scalar)(x) for x in v.values())


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


_BLOCK_KEYS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "label": (_is_str, 'a string, e.g. "Table 2"'),
    "methods": (_list_of(_is_str), 'a non-empty list of method names, e.g. ["natural", "at"]'),
    "dataset": (_is_str, 'a dataset name, e.g. "cifar10"'),
    "arch": (_is_str, 'an architecture name, e.g. "wrn-34-10"'),
    "eps": (_list_of(_is_scalar), 'a non-empty list of numbers or fractions, e.g. [0.3] or ["8/255"]'),
    "seeds": (_list_of(_is_int), "a non-empty list of integers, e.g. [0, 1, 2, 3, 4]"),
    "hparams": (_hparam_table, "a table of hyperparameter = value or [values], e.g. {beta = 5, b = [0.05, 0.1]}"),
    **{o.name: (o.suite_shape, o.allowed()) for o in RUN_OPTIONS},
    "attacks": (_list_of(_is_str), 'a non-empty list of attack names, e.g. ["natural", "pgd20"]'),
    "n_examples": (lambda v: _is_int(v) and v > 0, "a positive integer"),
}
_REQUIRED = ("methods", "dataset", "eps", "attacks")
_TOP_KEYS = ("description", "include", "defaults", "runs", "log", "slurm")
MAX_RUNS = 10_000  # runs in one suite: a grid counted before it is expanded, so a typo'd 10^6 answers at once


def load_suite(name_or_path: str) -> Suite:
    """A shipped suite by name (see SUITES), or a suite file by path; UsageError if it is malformed."""
    path = _locate(name_or_path, Path.cwd())
    if not path.stem or path.stem.startswith("."):  # the name picks folders (RESULTS/reports/NAME)
        raise UsageError(f"suite file {path}: its name {path.stem!r} is not a suite name; name the file NAME.toml "
                         f"with NAME starting with a letter or digit")
    description, runs, log, slurm = _read(path, ())
    merged: dict[str, RunSpec] = {}
    for run in runs:
        old = merged.get(run.name)
        if old is not None:
            n = None if None in (old.n_examples, run.n_examples) else max(old.n_examples, run.n_examples)
            run = RunSpec(old.config, _union(old.attacks, run.attacks), n, _union(old.labels, run.labels))
        merged[run.name] = run
    return Suite(path.stem, path, description, tuple(merged.values()), log, slurm)


def _union(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(a + b))


def folder_suite(results: Path) -> tuple[Suite, list[str]]:
    """Every run directory in a results folder, as a suite of its own (`results` and `report` without
    `--suite`): RESULTS/runs/* (what `cat-bench run` writes) and RESULTS/* (what `train --out
    RESULTS/NAME` writes). Each run counts as done with the evaluation it has (its attacks, its number
    of examples). Returns the suite and, for each folder left out, why: its config.json cannot be read,
    or it is a copy of another run folder (the same configuration; the one where `cat-bench run` puts
    it, else the first by path, stays)."""
    results = Path(results)
    specs, skipped, seen = [], [], {}
    folders = sorted(path.parent for path in [*results.glob("*/" + records.CONFIG),
                                              *results.glob("runs/*/" + records.CONFIG)])
    for run in sorted(folders, key=lambda run: not _at_its_place(results, run)):  # a copy's original first
        try:
            config = records.read_identity(run)
            ev = records.read_json(run / records.EVAL) if (run / records.EVAL).is_file() else {}
        except CorruptRecord as err:
            skipped.append(f"{run}: {err}")
            continue
        name = records.run_name(config)
        if name in seen:
            skipped.append(f"{run}: a copy of the run {seen[name]} (the same configuration); it is left out of "
                           f"the tables: remove it, or move it out of {results}")
            continue
        seen[name] = run
        hashed = run.parent == results / "runs" and run.name == name
        attacks = tuple(ev.get("attacks", {})) or ("natural",)
        specs.append(RunSpec(config, attacks, ev.get("key", {}).get("n_examples"), (),
                             None if hashed else str(run.relative_to(results))))
    description = f"Every run in {results}: {len(specs)} run director{'y' if len(specs) == 1 else 'ies'}."
    return Suite(results.resolve().name or "results", results, description, tuple(specs)), skipped


def _at_its_place(results: Path, run: Path) -> bool:
    """Whether `run` is where `cat-bench run` puts a run: RESULTS/runs/<its hash name>."""
    return run.parent == results / "runs" and bool(records.RUN_NAME.fullmatch(run.name))


def _locate(entry: str, base: Path) -> Path:
    """A shipped suite name, or a .toml path (relative to `base`), as an existing file."""
    shipped = f"shipped suites: {', '.join(SUITES)}"
    if entry in SUITES:
        return SUITES_DIR / f"{entry}.toml"
    if (base / entry).is_dir():
        raise UsageError(f"--suite {entry!r} is a folder; give a suite file (NAME.toml), or a shipped suite: "
                         f"{', '.join(SUITES)}")
    if entry.endswith(".toml") or "/" in entry or "\\" in entry:
        path = (base / entry).resolve()
        if not path.is_file():
            raise UsageError(f"suite file {path} does not exist; {shipped}")
        return path
    raise UsageError(f"unknown suite {entry!r}; {shipped}; or give the path to a .toml file")


def _read(path: Path, stack: tuple[Path, ...]) -> tuple[str, list[RunSpec], tuple[str, ...], dict]:
    """The description, the expanded, unmerged runs of a suite file and of what it includes, and the
    file's own `log` trackers and [slurm] table."""
    if path in stack:
        chain = " -> ".join(str(p) for p in (*stack, path))
        raise UsageError(f"{stack[-1]}: key 'include': include cycle {chain}")
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise UsageError(f"{path}: not a valid TOML file: {_where(err, path)}") from None
    for key in data:
        if key not in _TOP_KEYS:
            raise UsageError(f"{path}: unknown key {key!r}; allowed at the top level: {', '.join(_TOP_KEYS)}")
    description = data.get("description")
    if not isinstance(description, str):
        raise UsageError(f"{path}: key 'description': expected a string saying what the suite is for (required)")
    include = data.get("include", [])
    if not isinstance(include, list) or not all(isinstance(x, str) for x in include):
        raise UsageError(f"{path}: key 'include': expected a list of suite names or .toml paths, e.g. [\"mnist\"]")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise UsageError(f"{path}: key 'defaults': expected a table ([defaults])")
    blocks = data.get("runs", [])
    if not isinstance(blocks, list) or not all(isinstance(b, dict) for b in blocks):
        raise UsageError(f"{path}: key 'runs': expected [[runs]] blocks")
    if not blocks and not include:
        raise UsageError(f"{path}: key 'runs': expected at least one [[runs]] block or an include")
    log = data.get("log", [])
    if not isinstance(log, list) or not all(isinstance(x, str) for x in log):
        raise UsageError(f"{path}: key 'log': expected a list of trackers, e.g. [\"tensorboard\"]")
    slurm = check_slurm_table(data.get("slurm", {}), str(path))

    runs: list[RunSpec] = []
    for entry in include:
        try:
            included = _locate(entry, path.parent)
        except UsageError as err:
            raise UsageError(f"{path}: key 'include': {err}") from None
        runs += _read(included, (*stack, path))[1]
    _check_keys(path, "[defaults]", defaults)
    for i, block in enumerate(blocks, start=1):
        label = block.get("label", defaults.get("label"))
        where = f"[[runs]] block {i}" + (f" ({label})" if isinstance(label, str) else "")
        _check_keys(path, where, block)
        runs += _expand(path, where, {"label": f"{path.stem} block {i}", "seeds": [0], **defaults, **block})
        if len(runs) > MAX_RUNS:
            raise UsageError(f"{path}: {len(runs):,} runs after {where}; allowed: at most {MAX_RUNS:,} in a suite "
                             f"(the paper's is 144): split it")
    return description, runs, tuple(log), slurm


def _where(err: Exception, path: Path) -> str:
    """tomllib's message, which names the line of most errors; one found at the end of the file gets that
    line's number too (an unclosed bracket or string)."""
    text = str(err)
    if "end of document" in text:
        text += f" (line {len(path.read_bytes().splitlines())}, the last)"
    return text


def _check_keys(path: Path, where: str, block: dict) -> None:
    for key, value in block.items():
        if key not in _BLOCK_KEYS:
            raise UsageError(f"{path}: {where}: unknown key {key!r}; allowed: {', '.join(_BLOCK_KEYS)}")
        valid, expected = _BLOCK_KEYS[key]
        if not valid(value):
            raise UsageError(f"{path}: {where}: key {key!r}: expected {expected}, got {value!r}")


def _expand(path: Path, where: str, block: dict) -> list[RunSpec]:
    """One block's runs: methods x eps x seeds x hparam grid, each resolved by `resolve_config`."""
    def fail(key: str, message: str) -> UsageError:
        return UsageError(f"{path}: {where}: key {key!r}: {message}")

    for key in _REQUIRED:
        if key not in block:
            raise fail(key, f"required (in the block or in [defaults]); expected {_BLOCK_KEYS[key][1]}")
    try:
        family = dataset_info(block["dataset"]).family
    except UsageError as err:
        raise fail("dataset", str(err)) from None
    for method in block["methods"]:
        try:
            get_method(method)
        except UsageError as err:
            raise fail("methods", str(err)) from None
    try:
        eps_values = [parse_eps(e) if isinstance(e, str) else float(e) for e in block["eps"]]
    except UsageError as err:
        raise fail("eps", str(err)) from None
    for attack in block["attacks"]:
        if attack not in attacks_for(family):
            raise fail("attacks", f"unknown attack {attack!r} for {block['dataset']}; "
                                  f"allowed: {', '.join(attacks_for(family))}")
    hparams = block.get("hparams", {})
    axes = [v if isinstance(v, list) else [v] for v in hparams.values()]
    size = math.prod(map(len, [block["methods"], eps_values, block["seeds"], *axes]))
    if size > MAX_RUNS:
        raise UsageError(f"{path}: {where}: expands to {size:,} runs (methods x eps x seeds x hparam values); "
                         f"allowed: at most {MAX_RUNS:,} in a suite (the paper's is 144): split the grid")
    runs = []
    for method, eps, seed, values in itertools.product(block["methods"], eps_values, block["seeds"],
                                                       itertools.product(*axes)):
        overrides = {k: str(v) for k, v in zip(hparams, values)}
        try:
            config = resolve_config(method, block["dataset"], eps, seed=seed, overrides=overrides,
                                    **{k: v for k, v in block.items() if k in OPTIONS})
        except UsageError as err:
            run = " ".join(f"{k}={v}" for k, v in {"method": method, "eps": eps, "seed": seed, **overrides}.items())
            raise UsageError(f"{path}: {where}: run {run}: {err}") from None
        runs.append(RunSpec(config, tuple(block["attacks"]), block.get("n_examples"), (block["label"],)))
    return runs


_FIELDS: dict[str, Callable[[dict], Any]] = {
    "method": lambda c: c["method"], "dataset": lambda c: c["dataset"], "arch": lambda c: c["arch"],
    "eps": lambda c: c["eps"], "seed": lambda c: c["seed"], "epochs": lambda c: c["schedule"]["epochs"],
    "protocol": lambda c: c["protocol"], "schedule": lambda c: c["schedule"]["name"],
    "precision": lambda c: c["precision"], "ema": lambda c: c.get("ema"),
}
_HPARAM_NAMES = tuple(dict.fromkeys(k for m in METHODS.values() for k in m.HPARAMS))
_NUMERIC = ("eps", "seed", "epochs", "ema")


def _number(text: str) -> float | None:
    try:
        return float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        return None


def _same(actual: Any, text: str) -> bool:
    """Numbers compare numerically (tolerance 1e-9, so 8/255 matches), anything else as text."""
    if _is_int(actual) or isinstance(actual, float):
        wanted = _number(text)
        return wanted is not None and abs(actual - wanted) <= 1e-9
    return str(actual) == text


def _parse_only(only: list[str]) -> list[tuple[str, list[str]]]:
    """`KEY=VALUE[,VALUE...]` filters as (key, values), refusing malformed ones and unknown keys."""
    allowed = (*_FIELDS, "label", *_HPARAM_NAMES)
    tests = []
    for item in only:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or not text.strip():
            raise UsageError(f"--only {item!r} is not KEY=VALUE[,VALUE...], e.g. method=at eps=8/255 seed=0")
        if key not in allowed:
            raise UsageError(f"--only {item!r}: unknown key {key!r}; allowed: {', '.join(allowed)}")
        wanted = [v.strip() for v in text.split(",")]
        if key in _NUMERIC and any(_number(v) is None for v in wanted):
            raise UsageError(f"--only {item!r}: {key} takes numbers, e.g. eps=8/255 or seed=0")
        tests.append((key, wanted))
    return tests


def _values(run: RunSpec, key: str) -> list:
    """The run's values for a filter key (none when it lacks the hyperparameter)."""
    if key == "label":
        return list(run.labels)
    if key in _FIELDS:
        return [_FIELDS[key](run.config)]
    return [run.config["hparams"][key]] if key in run.config["hparams"] else []


def filter_runs(runs: Iterable[RunSpec], only: list[str], *, require_match: bool = False) -> list[RunSpec]:
    """The runs matching every `KEY=VALUE[,VALUE...]` filter (e.g. method=at,trades eps=8/255 b=0.05).

    Keys: method, dataset, arch, eps, seed, epochs, protocol, schedule, precision, ema, label, or any
    hyperparameter name; a run without that hyperparameter does not match. `require_match`
    (the command line): filters that keep none of the runs are a UsageError naming the first
    filter that matches nothing and the values the runs have.
    """
    runs = list(runs)
    tests = _parse_only(only)
    kept = [run for run in runs if all(any(_same(v, w) for v in _values(run, key) for w in wanted)
                                       for key, wanted in tests)]
    if require_match and runs and tests and not kept:
        raise UsageError(_no_match(runs, only, tests))
    return kept


def _no_match(runs: list[RunSpec], only: list[str], tests: list[tuple[str, list[str]]]) -> str:
    for item, (key, wanted) in zip(only, tests):
        values = {v for run in runs for v in _values(run, key)}
        if not any(_same(v, w) for v in values for w in wanted):
            shown = sorted(format_eps(v) if key == "eps" else str(v) for v in values)
            return (f"--only {item!r} matches none of the suite's {len(runs)} runs; its runs have {key} = "
                    f"{', '.join(shown) if shown else '(none: no run has this hyperparameter)'}")
    return (f"--only {' '.join(only)} matches none of the suite's {len(runs)} runs "
            f"(each filter matches some runs, not all of them together)")
