"""`cat-bench compare A B`: is the accuracy difference between two evaluated runs real?

Both runs must have been evaluated on the same test examples (same dataset, the same first n
examples, the same eps), with per-example records (cat_bench.per_example). For every attack both
ran, and for the worst case over their attacks:

    difference      accuracy of B minus accuracy of A, in percentage points
    95% interval    paired bootstrap: the examples are resampled with replacement, each resample
                    keeping A's and B's outcome on the same example together (the pairing), and
                    the 2.5th and 97.5th percentiles of the resampled differences are reported.
                    An example's difference is -1, 0 or +1, so a resample of n examples is a
                    multinomial draw over those three counts (the same distribution, without
                    materialising n indices per resample)
    McNemar p       exact two-sided McNemar test: of the examples on which A and B disagree, how
                    surprising the split between "only A correct" (b) and "only B correct" (c) is
                    if either is equally likely: binomial(b + c, 1/2) (scipy.stats.binomtest);
                    p = 1 when they never disagree

Two seeds of the same training differ by chance; a paired test on the same examples is what tells
such a difference from a real one (one number per run cannot).

Only equals are compared: both sides' threat models (eps, norm, clip to [0, 1] or not, the pixel
protocol, the examples, each attack's settings) are printed, and two sides that differ in any of
them are refused, or with `--allow-different` compared with every difference printed (in bold on
a terminal). The networks are stated, not required equal: comparing two models is the point.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cat_bench import per_example, records
from cat_bench.errors import UsageError
from cat_bench.shell import command

N_BOOT = 10_000
MAX_BOOT = 1_000_000  # resamples: the draws are one [n_boot, 3] array of int64 (24 MB at the maximum)
LEVEL = 0.95


def paired_bootstrap(a: np.ndarray, b: np.ndarray, *, n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of mean(b) - mean(a) over paired resamples of the examples (fractions)."""
    d = b.astype(np.int8) - a.astype(np.int8)
    n = len(d)
    counts = np.array([(d == -1).sum(), (d == 0).sum(), (d == 1).sum()])
    draws = np.random.default_rng(seed).multinomial(n, counts / n, size=n_boot)
    diffs = (draws[:, 2] - draws[:, 0]) / n
    lo, hi = np.quantile(diffs, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return float(lo), float(hi)


def mcnemar_exact(a: np.ndarray, b: np.ndarray) -> tuple[float, int, int]:
    """(two-sided exact McNemar p-value, b = only A correct, c = only B correct)."""
    from scipy.stats import binomtest

    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    if only_a + only_b == 0:
        return 1.0, 0, 0
    return float(binomtest(only_a, only_a + only_b, 0.5).pvalue), only_a, only_b


def compare_correct(a: np.ndarray, b: np.ndarray, *, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """The statistics of one attack from the two runs' per-example correctness on the same examples."""
    lo, hi = paired_bootstrap(a, b, n_boot=n_boot, seed=seed)
    p, only_a, only_b = mcnemar_exact(a, b)
    return {"n": int(len(a)), "accuracy_a": float(a.mean()), "accuracy_b": float(b.mean()),
            "difference": float(b.mean() - a.mean()), "interval": [lo, hi], "p_value": p,
            "only_a": only_a, "only_b": only_b}


def _evaluation(run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    if not (run_dir / records.EVAL).is_file():
        raise UsageError(f"{run_dir} has no {records.EVAL}: not an evaluated run directory; evaluate it with "
                         f"{command('eval', run_dir)}")
    return records.read_json(run_dir / records.EVAL)


def _missing_records(run_dir: Path, evaluation: dict, attacks: list[str]) -> UsageError:
    """What to run to give an evaluation per-example records (and what it needs)."""
    key = evaluation["key"]
    how = command("eval", run_dir, "--attacks", ",".join(attacks), "--n-examples", key["n_examples"])
    need = ""
    run_dir = Path(run_dir)
    if (run_dir / records.CONFIG).is_file() and not (run_dir / records.BEST).is_file() \
            and not (run_dir / "external.json").is_file():
        from cat_bench.shipped import suites_with

        suites = suites_with(run_dir.name)
        retrain = (command("run", "--suite", suites[0], "--results", run_dir.parent.parent, "--retrain", run_dir.name)
                   if suites and run_dir.parent.name == "runs" else command("train", "...", "--out", run_dir))
        need = (f"; that needs its checkpoint {records.BEST}, which committed records leave out: train the run "
                f"again first with `{retrain}`, which also evaluates it with these records")
    return UsageError(f"{run_dir} has no per-example records for {', '.join(attacks)} (it was evaluated before "
                      f"they were written); create them with `{how}`{need}")


def _records(run_dir: Path, evaluation: dict, attacks: list[str]) -> dict[str, tuple[dict, np.ndarray]]:
    """The per-example record of each attack of the run's current evaluation."""
    entries = evaluation["attacks"]
    lacking = [a for a in attacks if not entries[a].get("examples")
               or not (Path(run_dir) / entries[a]["examples"]).is_file()]
    if lacking:
        raise _missing_records(run_dir, evaluation, lacking)
    out = {a: per_example.read(Path(run_dir) / entries[a]["examples"]) for a in attacks}
    if per_example.WORST in evaluation and set(evaluation[per_example.WORST]["attacks"]) >= set(attacks):
        rel = evaluation[per_example.WORST]["examples"]
        if (Path(run_dir) / rel).is_file():
            out[per_example.WORST] = per_example.read(Path(run_dir) / rel)
    return out


def _same_examples(a_dir: Path, a: dict, b_dir: Path, b: dict) -> None:
    """Both evaluations are on the same test examples at the same eps, else a UsageError naming both."""
    def what(ev, rec):
        return {"dataset": rec["dataset"], "examples": f"test[{rec['indices']['start']}:{rec['indices']['stop']}]",
                "eps": round(ev["key"]["eps"], 9)}

    wa, wb = what(*a), what(*b)
    if wa != wb:
        raise UsageError(f"{a_dir} and {b_dir} were not evaluated on the same examples ({wa} vs {wb}); a paired "
                         f"comparison needs both on the same ones: evaluate both with the same --n-examples and --eps")


def threat_model(run_dir: Path, evaluation: dict, record: dict, attacks: list[str]) -> dict:
    """What one side's numbers measure: eps, norm, whether attacks stay in [0, 1] (clip), the pixel
    protocol, the test examples, each attack's settings; and, stated beside it, the network."""
    identity = records.read_identity(run_dir) if (Path(run_dir) / records.CONFIG).is_file() else {}
    entries = evaluation["attacks"]
    clips = sorted({str(entries[a]["settings"].get("clip")) for a in attacks})
    return {"eps": round(evaluation["key"]["eps"], 9), "norm": "Linf", "clip": "/".join(clips),
            "protocol": identity.get("protocol", "?"),
            "examples": f"{record['dataset']} test[{record['indices']['start']}:{record['indices']['stop']}]",
            "attacks": {a: {k: v for k, v in entries[a]["settings"].items() if k != "source"} for a in attacks},
            "network": identity.get("arch", "?")}


THREAT_KEYS = ("eps", "norm", "clip", "protocol", "examples", "attacks")  # must be equal; `network` is stated


def differences(a: dict, b: dict) -> list[str]:
    """The threat-model keys on which the two sides differ, in words ("clip: False vs True")."""
    out = []
    for key in THREAT_KEYS:
        if a[key] != b[key]:
            if key == "attacks":
                out += [f"{name} settings: {a[key][name]} vs {b[key][name]}" for name in a[key]
                        if a[key][name] != b[key][name]]
            else:
                out.append(f"{key}: {a[key]} vs {b[key]}")
    return out


def compare_runs(run_a: Path, run_b: Path, attacks: list[str] | None = None, *, n_boot: int = N_BOOT,
                 seed: int = 0, allow_different: bool = False) -> dict:
    """{"a", "b", "key_a", "key_b", "threat_a", "threat_b", "different", "attacks": {name: compare_correct(...)}}
    over the attacks both runs' current evaluations hold (or `attacks`), plus the worst case when both
    have it over the same attacks. Two sides measured under different threat models (clip, protocol,
    attack settings) are a UsageError naming what differs, unless `allow_different`: then `different`
    lists it."""
    if not 100 <= n_boot <= MAX_BOOT:
        raise UsageError(f"--n-boot {n_boot!r}: allowed: 100 (enough for a 95% interval) to {MAX_BOOT:,} (the "
                         f"resamples are held in memory at once)")
    if seed < 0:
        raise UsageError(f"--seed {seed!r}: allowed: a non-negative integer (numpy's bootstrap seed)")
    ev_a, ev_b = _evaluation(run_a), _evaluation(run_b)
    from cat_bench.results import in_attack_order

    common = in_attack_order(a for a in ev_a["attacks"] if a in ev_b["attacks"])
    if attacks is not None:
        unknown = [a for a in attacks if a not in common]
        if unknown:
            raise UsageError(f"--attacks {','.join(unknown)}: not evaluated in both runs; both have: "
                             f"{', '.join(common) or 'none'}")
        common = attacks
    if not common:
        raise UsageError(f"{run_a} ({', '.join(ev_a['attacks'])}) and {run_b} ({', '.join(ev_b['attacks'])}) share "
                         f"no attack; evaluate both with the same --attacks")
    rec_a, rec_b = _records(run_a, ev_a, common), _records(run_b, ev_b, common)
    first = common[0]
    _same_examples(run_a, (ev_a, rec_a[first][0]), run_b, (ev_b, rec_b[first][0]))
    threat_a = threat_model(run_a, ev_a, rec_a[first][0], common)
    threat_b = threat_model(run_b, ev_b, rec_b[first][0], common)
    different = differences(threat_a, threat_b)
    if different and not allow_different:
        raise UsageError(f"{run_a} and {run_b} were not measured under the same threat model ({'; '.join(different)})"
                         f": their numbers do not compare; evaluate both the same way, or pass --allow-different to "
                         f"compare them anyway with the differences printed")
    names = common + ([per_example.WORST] if per_example.WORST in rec_a and per_example.WORST in rec_b
                      and ev_a[per_example.WORST]["attacks"] == ev_b[per_example.WORST]["attacks"] else [])
    return {"a": str(run_a), "b": str(run_b), "key_a": ev_a["key"], "key_b": ev_b["key"], "threat_a": threat_a,
            "threat_b": threat_b, "different": different, "n_boot": n_boot, "seed": seed,
            "attacks": {name: compare_correct(rec_a[name][1], rec_b[name][1], n_boot=n_boot, seed=seed)
                        for name in names}}


BOLD, PLAIN = "\033[1m", "\033[0m"


def format_comparison(result: dict, bold: bool = False) -> str:
    """The comparison as a plain-text table for people: both sides' threat models (what differs marked
    DIFFERENT, in bold on a terminal), then the statistics."""
    lines = [f"A: {result['a']}", f"B: {result['b']}"]
    for key in ("eps", "norm", "clip", "protocol", "examples", "network"):
        a, b = result["threat_a"][key], result["threat_b"][key]
        lines.append(f"  {key:<9} A {a}, B {b}" if a != b else f"  {key:<9} {a} (both)")
    for line in result["different"]:
        lines.append(f"{BOLD if bold else ''}DIFFERENT: {line}{PLAIN if bold else ''}")
    lines.append(f"{'attack':<11} {'A %':>7} {'B %':>7} {'B - A':>7}  {'95% interval (paired bootstrap)':<32} "
                 f"{'McNemar p':>9}  disagreements")
    for name, r in result["attacks"].items():
        lo, hi = (100 * v for v in r["interval"])
        lines.append(f"{name:<11} {100 * r['accuracy_a']:7.2f} {100 * r['accuracy_b']:7.2f} "
                     f"{100 * r['difference']:+7.2f}  [{lo:+6.2f}, {hi:+6.2f}]{'':<16} {r['p_value']:9.3g}  "
                     f"{r['only_a']} only A correct, {r['only_b']} only B correct")
    n = next(iter(result["attacks"].values()))["n"]
    lines.append(f"{n} paired test examples; differences in percentage points; {result['n_boot']} bootstrap "
                 f"resamples (seed {result['seed']}); McNemar's exact test, two-sided")
    return "\n".join(lines) + "\n"
