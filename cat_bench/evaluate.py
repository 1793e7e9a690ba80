"""Evaluation of a trained run under the paper's attacks (docs/method.md s4), resumable per attack.

`cat-bench eval RUN_DIR --attacks ...` loads the selected checkpoint, runs each attack preset on
the first N test examples in eval mode, and writes `eval.json` after every attack, so a killed
evaluation rerun skips what is finished (AutoAttack also keeps its finished sub-attacks).
"""

from __future__ import annotations

import time
from pathlib import Path

from cat_bench import per_example, records
from cat_bench.attacks import PGD, run_autoattack
from cat_bench.checks import is_stochastic, run_checks
from cat_bench.checks import failed as checks_failed
from cat_bench.data import dataset_info, load_split
from cat_bench.errors import CorruptRecord, UsageError
from cat_bench.lazy import torch
from cat_bench.networks import Networks, precision_context, resolve_device
from cat_bench.eval_attacks import AUTOATTACK_RAND, AUTOATTACK_STANDARD, attacks_for, eval_attack, multi_step, white_box
from cat_bench.presets import AttackPreset, clips
from cat_bench.progress import progress_bar
from cat_bench.rundir import RunLock, check_writable, claim
from cat_bench.shell import command



def default_batch_size(device: torch.device) -> int:
    """Evaluation batch size: 500 on CUDA; 100 on CPU, where smaller batches stay in cache (measured
    with PGD-20 on SmallCNN: 158 images/s at 100, 95 at 500)."""
    return 500 if device.type == "cuda" else 100


def correct_under(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, attack: PGD | None,
                  batch_size: int = 500, advance=lambda: None) -> torch.Tensor:
    """Per-example correctness (bool tensor on x's device) on clean inputs or under a white-box attack."""
    out = []
    for i in range(0, len(y), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        if xb.dtype == torch.uint8:
            xb = xb.float().div_(255)
        if attack is not None:
            xb = attack(model, xb, yb)
        with torch.no_grad():
            out.append(model(xb).argmax(1) == yb)
        advance()
    return torch.cat(out)


PGD_OVERSTATES = 0.02  # AutoAttack this far (a fraction) below PGD-100 flags PGD's number as overstated


def masking_flags(acc: dict[str, float]) -> list[dict]:
    """Signs of gradient masking: a multi-step attack weaker than FGSM, PGD-100 weaker than PGD-20,
    the black-box Square attack stronger than every white-box attack run, or AutoAttack more than
    PGD_OVERSTATES (2 points) below PGD-100 (the paper's strongest attack overstates robustness)."""
    flags = []
    if "autoattack" in acc and "pgd100" in acc and acc["pgd100"] - acc["autoattack"] > PGD_OVERSTATES + 1e-9:
        flags.append({"flag": "PGD overstates robustness",
                      "detail": f"autoattack {acc['autoattack']:.4f} < pgd100 {acc['pgd100']:.4f} by more than "
                                f"{100 * PGD_OVERSTATES:g} points"})
    if "fgsm" in acc:
        for name in multi_step():
            if name in acc and acc[name] > acc["fgsm"]:
                flags.append({"flag": "multi-step weaker than single-step",
                              "detail": f"{name} accuracy {acc[name]:.4f} > fgsm {acc['fgsm']:.4f}"})
    if "pgd20" in acc and "pgd100" in acc and acc["pgd100"] > acc["pgd20"]:
        flags.append({"flag": "more steps weaker", "detail": f"pgd100 {acc['pgd100']:.4f} > pgd20 {acc['pgd20']:.4f}"})
    white = {k: acc[k] for k in white_box() if k in acc}
    if "square" in acc and white and acc["square"] < min(white.values()):
        best = min(white, key=white.get)
        flags.append({"flag": "black-box stronger than white-box",
                      "detail": f"square {acc['square']:.4f} < {best} {white[best]:.4f}"})
    return flags


def _settings(name: str, preset: AttackPreset, seed: int, clip: bool, stochastic: bool = False) -> dict:
    """eval.json's settings of one attack; AutoAttack on a stochastic forward is its rand version."""
    s = {"name": name, **preset.as_dict(), "source": preset.source, "clip": clip}
    if preset.kind in ("square", "autoattack"):
        s["clip"] = True  # pyautoattack keeps every iterate in [0,1]
        s.update(seed=seed, norm="Linf", library="pyautoattack")
        s["subattacks"] = ["square"] if preset.kind == "square" else list(AUTOATTACK_STANDARD)
        if preset.kind == "autoattack" and stochastic:
            s.update(version="rand", subattacks=list(AUTOATTACK_RAND))
    return s


def parse_attacks(spec: str, family: str) -> list[str]:
    """Split `--attacks a,b,c` and check every name against the presets."""
    names = [a.strip() for a in spec.split(",") if a.strip()]
    if not names:
        raise UsageError(f"--attacks {spec!r} names no attack; allowed: {', '.join(attacks_for(family))}")
    for name in names:
        if name not in attacks_for(family):
            raise UsageError(f"unknown attack {name!r}; allowed: {', '.join(attacks_for(family))}")
    return names


def check_options(*, batch_size: int | None, n_examples: int | None, eps: float | None) -> None:
    """UsageError for an evaluation option out of range, naming it and what is allowed."""
    if batch_size is not None and batch_size < 1:
        raise UsageError(f"--batch-size {batch_size!r} must be a positive integer")
    if n_examples is not None and n_examples < 1:
        raise UsageError(f"--n-examples {n_examples!r} must be a positive integer")
    if eps is not None and not 0 < eps <= 1:
        raise UsageError(f"eps {eps!r} is outside (0, 1]")


def trained_data_root(run_dir: Path, data_root=None):
    """The dataset root to evaluate with: the one given, else the one the run trained with (config.json's
    `data_root`, when that folder still exists), else the default ($CAT_BENCH_DATA, the user cache)."""
    if data_root is not None:
        return data_root
    recorded = records.read_json(run_dir / records.CONFIG).get("data_root")
    return recorded if recorded and Path(recorded).is_dir() else None


def load_test_examples(dataset: str, n_examples: int | None, data_root, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `n_examples` test examples (all without it; RobustBench's convention) on the device, pixels in [0,1]."""
    x, y = load_split(dataset, "test", data_root)
    if n_examples is not None:
        x, y = x[:n_examples], y[:n_examples]
    return examples_on(x, y, device)


def examples_on(x: torch.Tensor, y: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 examples as the evaluation reads them: on the device, pixels in [0,1], channels-last on CUDA."""
    x, y = x.to(device).float().div_(255), y.to(device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


def measure(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, preset: AttackPreset, settings: dict, *,
            seed: int, batch_size: int, device: torch.device, progress: bool = True, log=print,
            state_dir: Path | None = None, key: dict | None = None) -> torch.Tensor:
    """Per-example correctness under one evaluation preset, torch seeded with the run's seed first, so that
    every evaluation of the same weights on the same examples gives the same numbers.

    `settings` is what eval.json records for the attack (its `clip` decides PGD's [0,1] clip).
    AutoAttack and Square keep their finished sub-attacks under `state_dir`/eval_state and log to
    `state_dir`/autoattack.log; without a `state_dir` they keep and log nothing.
    """
    torch.manual_seed(seed)
    if preset.kind in ("natural", "pgd"):
        attack = preset.pgd(settings["clip"])
        with progress_bar(-(-len(y) // batch_size), settings["name"], enabled=progress) as advance:
            return correct_under(model, x, y, attack, batch_size, advance)
    return _autoattack(state_dir, model, x, y, preset.eps, settings, batch_size, seed, device, log, key=key)


def evaluate(run_dir: Path, attacks: str, **options) -> dict:
    """Evaluate a run's selected checkpoint; writes and returns eval.json's content (`_evaluate`'s
    options), holding the run's lock: one writer of eval.json at a time (RunBusy for a second)."""
    run_dir = Path(run_dir)
    if not (run_dir / records.CONFIG).is_file():
        raise UsageError(f"{run_dir} is not a run directory (no {records.CONFIG}); train one with cat-bench train --out")
    if not _writable(run_dir):
        return _recorded(run_dir, attacks, n_examples=options.get("n_examples"), eps=options.get("eps"),
                         log=options.get("log", print))
    with RunLock(run_dir):
        claim(run_dir, "run")
        return _evaluate(run_dir, attacks, **options)


def _writable(run_dir: Path) -> bool:
    """Whether the run directory and the folder its lock goes in can be written (a real probe)."""
    try:
        check_writable(run_dir.parent)
        check_writable(run_dir)
    except UsageError:
        return False
    return True


def _recorded(run_dir: Path, attacks: str, *, n_examples: int | None, eps: float | None, log) -> dict:
    """The evaluation eval.json holds, for a run on a read-only mount: returned when it covers every
    attack asked for on the examples and eps asked for (said to be recorded, not run again), else a
    UsageError naming what it holds."""
    config = records.read_identity(run_dir)
    info = dataset_info(config["dataset"])
    names = parse_attacks(attacks, info.family)
    held = records.read_json(run_dir / records.EVAL) if (run_dir / records.EVAL).is_file() else None
    if held is not None:
        records.check_evaluation(run_dir / records.EVAL, held)
        key = held["key"]
        n = min(n_examples or info.n_test, info.n_test)
        if key["n_examples"] == n and key["eps"] == (info.test_eps if eps is None else eps) and \
                set(names) <= set(held["attacks"]):
            log(f"note: {run_dir} is read-only: these are the numbers its eval.json records (not run again)")
            return held
    holds = ("no evaluation" if held is None else f"{', '.join(held['attacks'])} on {held['key']['n_examples']} "
             f"examples at eps {held['key']['eps']}")
    raise UsageError(f"cannot write in the run directory {run_dir} (read-only?), and its eval.json holds {holds}; "
                     f"ask for what it holds to reprint it, or copy the run to a writable folder to evaluate more")


def _evaluate(run_dir: Path, attacks: str, *, n_examples: int | None = None, eps: float | None = None,
              batch_size: int | None = None, data_root=None, device: torch.device | str | None = None,
              progress: bool = True, log=print, unfinished: bool = False, strict: bool = False) -> dict:
    """Evaluate a run's selected checkpoint; writes and returns eval.json's content (`attack_all`).

    A run without `done` (training stopped or killed) is refused unless `unfinished`: its best
    checkpoint so far is not the one its protocol selects. Every argument is checked before torch
    is touched (`device`: a torch.device or a name for `resolve_device`), and the run directory's
    writability before any attack runs.
    """
    if not unfinished and not (run_dir / records.DONE).exists():
        epochs = len(records.read_jsonl(run_dir / records.HISTORY))
        raise UsageError(f"{run_dir} has not finished training ({epochs} epoch(s) recorded, no {records.DONE} "
                         f"marker); finish it with `{command('train', '...', '--resume', '--out', run_dir)}` (or rerun its suite), "
                         f"or pass --unfinished to evaluate its best checkpoint so far")
    config = records.read_identity(run_dir)
    info = dataset_info(config["dataset"])
    names = parse_attacks(attacks, info.family)
    check_options(batch_size=batch_size, n_examples=n_examples, eps=eps)
    check_writable(run_dir, "run directory")
    device = resolve_device(device)
    precision_context("fp32", device)  # the paper's evaluation: fp32, TF32 off
    batch_size = batch_size or default_batch_size(device)
    if (run_dir / records.DONE).exists() and not (run_dir / records.BEST).exists():
        raise UsageError(f"missing checkpoint {run_dir / records.BEST} of a finished run (resuming cannot make it); "
                         f"train the run again from scratch: in a suite, `cat-bench run --suite SUITE --retrain "
                         f"{run_dir.name}`; else move {run_dir} aside and rerun its `cat-bench train` command")
    ckpt = records.load_checkpoint(run_dir / records.BEST)
    nets = Networks(config, device)
    try:
        nets.load(ckpt["nets"])
        best_epoch = int(ckpt["epoch"])
    except (KeyError, RuntimeError, TypeError, IndexError, ValueError) as err:
        raise CorruptRecord(f"corrupt checkpoint {run_dir / records.BEST}: {type(err).__name__}: {err}") from None
    model = nets.f.eval()

    x, y = load_test_examples(config["dataset"], n_examples, trained_data_root(run_dir, data_root), device)
    if n_examples is not None and n_examples > len(y):
        log(f"note: --n-examples {n_examples} is more than the {len(y)} test examples; evaluating (and "
            f"recording) all {len(y)}")
    test_eps = eps if eps is not None else info.test_eps
    clip = clips(info.family, config["protocol"])
    key = {"checkpoint": records.BEST, "epoch": best_epoch, "n_examples": len(y), "eps": test_eps}
    return attack_all(run_dir, model, x, y, names, key=key, dataset=config["dataset"], seed=config["seed"], clip=clip,
                      eps_override=eps is not None, batch_size=batch_size, device=device, progress=progress, log=log,
                      strict=strict)


def attack_all(run_dir: Path, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, names: list[str], *,
               key: dict, dataset: str, seed: int, clip: bool, eps_override: bool, batch_size: int,
               device: torch.device, progress: bool = True, log=print, strict: bool = False,
               checks: list[dict] | None = None) -> dict:
    """Check the setup, then run each attack not yet in eval.json under `key`; writes and returns eval.json's content.

    The setup checks (cat_bench.checks) run first, on the model as it is attacked: a failed one is
    logged as a warning and recorded under "checks" (with `strict`, a UsageError before anything is
    written); a stochastic forward switches AutoAttack to its rand version. Every attack leaves a
    per-example record (cat_bench.per_example) and eval.json is written after each attack; at the
    end the worst case over the attacks run is added. `checks`: `setup_checks`' result when the caller ran
    them already.
    """
    info = dataset_info(dataset)
    if checks is None:
        checks = setup_checks(model, x, y, family=info.family, clip=clip, strict=strict, where=run_dir, log=log)
    stochastic = is_stochastic(checks)
    if stochastic:
        log(f"note: {next(c['detail'] for c in checks if c['check'] == 'deterministic')}")

    path = run_dir / records.EVAL
    for name in names:  # before any attack runs: a link where a record goes refuses the whole evaluation
        records.refuse_links(run_dir / per_example.relative_path(name, key))
    records.refuse_links(path)
    held = records.read_json(path) if path.exists() else {}
    if held:
        records.check_evaluation(path, held)  # a record without what this reads (an attack's settings) is named
    result = _select_evaluation(held, key)
    result.setdefault("provenance", records.provenance(device))  # replaced once this evaluation runs an attack
    result["checks"] = checks
    test_eps = key["eps"]
    for name in names:
        preset = eval_attack(info.family, name, test_eps, override=eps_override)
        settings = _settings(name, preset, seed, clip, stochastic)
        done = result["attacks"].get(name)
        if done is not None and done["settings"] == settings and _has_examples(run_dir, done):
            log(f"{name}: {100 * done['accuracy']:.2f}% (already evaluated)")
            continue
        result["provenance"] = records.provenance(device)  # of the evaluation that runs an attack
        t0 = time.time()
        correct = measure(model, x, y, preset, settings, seed=seed, batch_size=batch_size, device=device,
                          progress=progress, log=log, state_dir=run_dir, key=key)
        rel = per_example.write(run_dir, name, key, dataset, correct.cpu().numpy())
        result["attacks"][name] = {"accuracy": correct.sum().item() / len(correct), "settings": settings,
                                   "seconds": time.time() - t0, "examples": rel}
        result["flags"] = masking_flags({k: v["accuracy"] for k, v in result["attacks"].items()})
        records.write_json(path, protocol_first(result, info.test_eps))
        log(f"{name}: {100 * result['attacks'][name]['accuracy']:.2f}% ({time.time() - t0:.1f} s)")
    result["flags"] = masking_flags({k: v["accuracy"] for k, v in result["attacks"].items()})
    worst = per_example.worst_case(run_dir, result)
    result.pop(per_example.WORST, None)
    if worst is not None:
        result[per_example.WORST] = worst
    records.write_json(path, protocol_first(result, info.test_eps))
    for flag in result["flags"]:
        log(f"WARNING, possible gradient masking: {flag['flag']} ({flag['detail']})")
    return result


def setup_checks(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, family: str, clip: bool, strict: bool,
                 where, log=print) -> list[dict]:
    """cat_bench.checks on the model as it is attacked: each failure logged as a warning, and with `strict`
    a UsageError naming the failed checks."""
    checks = run_checks(model, x, y, family=family, clip=clip)
    for check in checks_failed(checks):
        log(f"WARNING, setup check {check['check']} failed: {check['detail']}")
    if strict and checks_failed(checks):
        raise UsageError(f"--strict: setup check(s) {', '.join(c['check'] for c in checks_failed(checks))} failed "
                         f"for {where}; nothing was attacked or written (details above); fix the model's setup or "
                         f"evaluate without --strict to record the failure as a flag")
    return checks


def _has_examples(run_dir: Path, entry: dict) -> bool:
    """Whether an evaluated attack's per-example record is on disk (attacks evaluated before such records
    existed run again, to make one)."""
    return entry.get("examples") is not None and (run_dir / entry["examples"]).is_file()


FIELDS = ("key", "attacks", "flags", "provenance", "checks", per_example.WORST)  # one evaluation in eval.json


def evaluations(stored: dict) -> list[dict]:
    """Every evaluation eval.json holds: the one on top, then the others ("earlier")."""
    return ([{k: stored[k] for k in FIELDS if k in stored}] if "key" in stored else []) + stored.get("earlier", [])


def protocol_first(stored: dict, test_eps: float) -> dict:
    """eval.json's content with the run's protocol evaluation on top, every other one under "earlier".

    The protocol evaluation is the one at the dataset's test eps, of the newest checkpoint epoch, on
    the most test examples (the newest of equals): what tables, the leaderboard and `compare` read.
    An ad-hoc evaluation (another eps, a subset, other attacks on fewer examples) is kept beside it
    and never replaces it.
    """
    held = evaluations(stored)
    if not held:
        return stored

    def rank(evaluation: dict) -> tuple:
        key = evaluation["key"]
        return abs(key["eps"] - test_eps) < 1e-9, key.get("epoch") or 0, key["n_examples"]

    top = max(held, key=rank)  # the first of equals: the evaluation just run is first
    rest = [e for e in held if e is not top]
    return {**top, **({"earlier": rest} if rest else {})}


def _select_evaluation(stored: dict, key: dict) -> dict:
    """The evaluation of `key` (new, or held in eval.json) with every other one under "earlier": the
    view an evaluation works on. Evaluations with other keys (another eps, n_examples or checkpoint
    epoch) are never dropped, and coming back to one of them reuses its finished attacks; on disk
    the protocol evaluation stays on top (`protocol_first`).
    """
    held = evaluations(stored)
    current = next((e for e in held if e["key"] == key), {"key": key, "attacks": {}})
    earlier = [e for e in held if e is not current]
    return {**current, **({"earlier": earlier} if earlier else {})}


def _autoattack(run_dir: Path | None, model, x, y, eps, settings, batch_size, seed, device, log,
                key: dict | None = None) -> torch.Tensor:
    """AutoAttack or Square via pyautoattack, checkpointing robust flags after each sub-attack (under
    `run_dir`; with None, nothing is kept).

    The saved flags are reused only for the same attack settings and the same evaluation `key`
    (checkpoint epoch, n_examples, eps): flags from an older best.pt must not leak into a new one.
    """
    robust, finished = torch.ones(len(y), dtype=torch.bool), []
    if run_dir is None:
        return run_autoattack(model, x, y, eps, settings["subattacks"], robust.to(device), batch_size=batch_size,
                              seed=seed, device=device, on_attack_done=lambda name, flags: None,
                              version=settings.get("version", "standard"), log=log)
    state_path = run_dir / "eval_state" / f"{settings['name']}.pt"
    if state_path.exists():
        state = records.load_checkpoint(state_path)
        if not (isinstance(state, dict) and {"settings", "robust", "finished"} <= set(state)
                and isinstance(state["robust"], torch.Tensor) and isinstance(state["finished"], (list, tuple))):
            raise CorruptRecord(f"corrupt record {state_path}: not an AutoAttack state (settings, robust, finished); "
                                f"delete it and AutoAttack starts again")
        if state["settings"] == settings and state.get("key") == key and len(state["robust"]) == len(y):
            robust, finished = state["robust"], list(state["finished"])
            log(f"{settings['name']}: resuming after {', '.join(finished) or 'nothing'}")

    def save(name: str, flags: torch.Tensor) -> None:
        finished.append(name)
        records.save_checkpoint(state_path, {"settings": settings, "key": key, "robust": flags.cpu(),
                                             "finished": finished})

    todo = [a for a in settings["subattacks"] if a not in finished]
    robust = run_autoattack(model, x, y, eps, todo, robust.to(device), batch_size=batch_size, seed=seed,
                            device=device, on_attack_done=save, log_file=run_dir / "autoattack.log",
                            version=settings.get("version", "standard"), log=log)
    state_path.unlink(missing_ok=True)
    return robust
