"""A suite's runs as the report sees them: each RunSpec with its state and, once finished, its records.

`load_runs` reads every run directory of a suite once (config.json, done, eval.json, history.jsonl)
so that tables, figures, the leaderboard and the run pages all work from the same snapshot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from cat_bench import records
from cat_bench.external import external_runs
from cat_bench.orchestrate import run_dir, state
from cat_bench.results import collect
from cat_bench.suite import RunSpec, Suite


STATE_LABELS = {"done": "finished", "partial": "in progress", "failed": "failed", "todo": "not started"}


@dataclass
class RunRecord:
    """One run of the suite: its spec, state ('done', 'partial', 'failed', 'todo') and, when finished (and not
    failed: its records verified), its records."""

    spec: RunSpec
    path: Path
    state: str
    identity: dict | None = None  # config.json["identity"] (finished runs only)
    provenance: dict | None = None  # config.json["provenance"]
    done: dict | None = None
    evaluation: dict | None = None  # eval.json
    history: list[dict] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def finished(self) -> bool:
        """Trained and evaluated (what `cat_bench.results.collect` lists), even if the suite wants more attacks."""
        return self.identity is not None

    @property
    def state_label(self) -> str:
        """The state in words: 'finished', 'trained, not evaluated', 'in progress', 'failed' or 'not started'."""
        if self.state == "partial" and not self.finished and (self.path / records.DONE).is_file():
            return "trained, not evaluated"
        return STATE_LABELS[self.state]

    @property
    def external(self) -> dict | None:
        """What an external run evaluated (identity["external"]: source, kind, SHA-256); None for a trained run."""
        return (self.identity or {}).get("external")

    def accuracy(self, attack: str) -> float | None:
        """An evaluated attack's accuracy in percent, or None."""
        entry = (self.evaluation or {}).get("attacks", {}).get(attack)
        return None if entry is None else 100 * entry["accuracy"]


def load_runs(suite: Suite, results: Path) -> tuple[list[RunRecord], pd.DataFrame]:
    """Every run of the suite, in suite order, then the external runs of its datasets (RESULTS/external,
    cat_bench.external), and `collect`'s table of the finished ones, external runs included (as
    `cat-bench results` lists them)."""
    runs = []
    for spec in suite.runs:
        path = run_dir(results, spec)
        rec = RunRecord(spec, path, state(results, spec))
        if rec.state != "failed" and all((path / name).is_file() for name in (records.DONE, records.EVAL, records.CONFIG)):
            config = records.read_json(path / records.CONFIG)
            rec.identity, rec.provenance = records.normalised(config["identity"]), config.get("provenance", {})
            rec.done = records.read_json(path / records.DONE)
            rec.evaluation = records.read_json(path / records.EVAL)
            rec.history = records.read_jsonl(path / records.HISTORY)
        runs.append(rec)
    runs += external_records(results, {s.config["dataset"] for s in suite.runs})
    return runs, collect([r.path for r in runs if r.finished])


def in_progress(runs: Sequence[RunRecord]) -> dict[str, list[dict]]:
    """The history rows of the unfinished runs that have trained an epoch, by run name."""
    out = {}
    for run in runs:
        if run.state == "partial" and not run.finished:
            history = records.read_jsonl(run.path / records.HISTORY)
            if history:
                out[run.name] = history
    return out


def external_records(results: Path, datasets: set[str]) -> list[RunRecord]:
    """The evaluated external runs of these datasets, as RunRecords labelled "external"."""
    out = []
    for path in external_runs(results, datasets):
        if not (path / records.EVAL).is_file():
            continue
        config = records.read_json(path / records.CONFIG)
        evaluation = records.read_json(path / records.EVAL)
        identity = records.normalised(config["identity"])
        spec = RunSpec(identity, tuple(evaluation["attacks"]), evaluation["key"]["n_examples"], ("external",))
        out.append(RunRecord(spec, path, "done", identity=identity, provenance=evaluation.get("provenance"),
                             done=records.read_json(path / records.DONE), evaluation=evaluation))
    return out
