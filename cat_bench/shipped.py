"""A finished run's selected model as a small folder to ship, and the check of such a folder.

`cat-bench export RUN_DIR --name NAME` writes `results/models/NAME/` (or `--out`), all at once
(a temporary folder renamed into place):

    weights.pt          {"f": state dict, "g": state dict (CAT's mask net)} of the run's
                        checkpoints/best.pt: tensors only, `torch.load(..., weights_only=True)`
    weights.pt.sha256   its SHA-256 in `sha256sum` format (`sha256sum -c weights.pt.sha256`)
    check-examples.npz  the first 500 test examples of the dataset (x uint8 [N, C, H, W], y int64),
                        as cat_bench.data.load_split reads them, so that the check runs offline
    card.json           the model card for programs: what it is, the run's identity and the sources
                        of its protocol, how it was trained (command, machine, wall time, sessions),
                        its evaluation (eval.json), and the check below
    README.md           the same card for people

The check: natural and PGD-20 accuracy on the first 500 test examples at the dataset's test eps
(the paper protocol's clip setting), measured at export time from the written weights and
examples files. `cat-bench eval results/models/NAME --attacks natural,pgd20 --n-examples 500`
verifies both SHA-256s (a mismatch exits 2), builds the networks from the card's identity,
evaluates with the same code as `cat-bench eval RUN_DIR` (cat_bench.evaluate.measure) and prints
each number beside the card's for the same examples. It only reads the folder and writes nothing,
unless `--record` is given: then the evaluation joins the card's further evaluations (`record_evaluation`;
AutoAttack beside PGD-100 is the one the shipped models carry).

Up to 500 examples come from the folder, so the check needs neither the dataset nor a network;
more examples, or `--data-root`, read the dataset's test split instead (the same first examples:
`mnist-mini`'s test digits are a class-balanced draw from MNIST's test set, not its first 500).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

from cat_bench import records
from cat_bench.data import dataset_info
from cat_bench.errors import CorruptRecord, UsageError
from cat_bench.eval_attacks import eval_attack
from cat_bench.presets import clips, format_eps, format_value

WEIGHTS = "weights.pt"
SHA256 = "weights.pt.sha256"
EXAMPLES = "check-examples.npz"
CARD = "card.json"
README = "README.md"
CARD_FORMAT = "cat-bench model card 1"
CONTENT_KEY = "content_sha256"  # the card's hash of its own content
CHECK_N = 500
CHECK_ATTACKS = ("natural", "pgd20")
MODELS = Path("results") / "models"
EVALUATIONS = "evaluations"  # card.json: evaluations measured after export (`cat-bench eval FOLDER --record`)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def is_model_folder(path: Path) -> bool:
    """Whether `path` is a shipped model folder (it has a card) rather than a run directory."""
    return (Path(path) / CARD).is_file()


def check_folder_name(name: str) -> None:
    """A model folder's name: letters, digits, '.', '_', '-', starting with a letter or digit."""
    if not NAME.fullmatch(name):
        raise UsageError(f"--name {name!r} is not a folder name; allowed: letters, digits, '.', '_' and '-', "
                         f"starting with a letter or digit (e.g. at-mnist-eps0.3)")


def sha256(path: Path) -> str:
    """The SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def git_ignored(folder: Path, names: tuple[str, ...] = (WEIGHTS, SHA256, EXAMPLES, CARD, README)) -> list[str]:
    """The files of a model folder that the git work tree holding it ignores (`git check-ignore`): they would
    never be committed, and a model's weights exist nowhere else. Empty outside a work tree or without git."""
    folder = Path(folder).resolve()
    root = next(p for p in (folder, *folder.parents) if p.is_dir())  # the folder, or where it would go
    try:
        done = subprocess.run(["git", "-C", str(root), "check-ignore", "--no-index", *(str(folder / n) for n in names)],
                              capture_output=True, text=True, check=False)
    except OSError:  # no git on this machine
        return []
    if done.returncode not in (0, 1):  # 128: not a work tree
        return []
    return sorted(Path(line).name for line in done.stdout.splitlines())


# ---------------------------------------------------------------------------------------------
# Export


def export_model(run_dir: Path, name: str, out: Path | None = None, *, trained_with: str | None = None,
                 device=None, batch_size: int | None = None, data_root=None, progress: bool = True,
                 log=print) -> Path:
    """Write the model folder of a finished, evaluated run (module docstring); returns the folder.

    `trained_with`: the command that trained the run as it was given (e.g. a suite's `cat-bench run`),
    recorded beside the derived `cat-bench train` command. Everything is checked before anything is
    written; the folder appears complete or not at all.
    """
    run_dir = Path(run_dir)
    check_folder_name(name)
    out = Path(out) if out is not None else MODELS / name
    if out.exists():
        raise UsageError(f"{out} already exists; remove it or choose another --name / --out")
    _check_finished(run_dir)
    from cat_bench.evaluate import check_options, default_batch_size
    from cat_bench.networks import resolve_device

    check_options(batch_size=batch_size, n_examples=None, eps=None)
    device = resolve_device(device)
    batch_size = batch_size or default_batch_size(device)
    ckpt = records.load_checkpoint(run_dir / records.BEST)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = records.temp_folder(out)
    try:
        _write_weights(tmp / WEIGHTS, ckpt, run_dir)
        digest = sha256(tmp / WEIGHTS)
        (tmp / SHA256).write_text(f"{digest}  {WEIGHTS}\n")
        card = model_card(run_dir, name, ckpt, digest, (tmp / WEIGHTS).stat().st_size, trained_with)
        card["check"] = {"examples": _write_examples(tmp / EXAMPLES, card["identity"]["dataset"], data_root)}
        log(f"measuring the check ({', '.join(CHECK_ATTACKS)} on the first {CHECK_N} test examples)")
        card["check"].update(_check(tmp, card, out, device, batch_size, progress))
        write_card(tmp, card)
        (tmp / README).write_text(readme(card))
        _readable(tmp)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _readable(folder: Path) -> None:
    """The modes a folder and its files would have had without temp files (mkdtemp/mkstemp make them private)."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.iterdir():
        path.chmod(0o666 & ~umask)


def _check_finished(run_dir: Path) -> None:
    """A run to export has finished training and been evaluated."""
    if not (run_dir / records.CONFIG).is_file():
        raise UsageError(f"{run_dir} is not a run directory (no {records.CONFIG})")
    if not (run_dir / records.DONE).is_file():
        raise UsageError(f"{run_dir} has not finished training (no {records.DONE}); finish it with "
                         f"`cat-bench train --resume --out {run_dir}` (or rerun its suite), then evaluate and export it")
    if not (run_dir / records.EVAL).is_file():
        raise UsageError(f"{run_dir} is not evaluated (no {records.EVAL}); evaluate it first: cat-bench eval {run_dir}")


def _write_weights(path: Path, ckpt: dict, run_dir: Path) -> None:
    """The checkpoint's network state dicts alone (no optimiser, RNG or score)."""
    try:
        nets = {k: {p: t.detach().cpu().contiguous() for p, t in sd.items()} for k, sd in ckpt["nets"].items()}
    except (KeyError, AttributeError, TypeError) as err:
        raise CorruptRecord(f"corrupt checkpoint {run_dir / records.BEST}: {type(err).__name__}: {err}") from None
    records.save_checkpoint(path, nets)  # a full disk: an OSError naming the file, not torch's RuntimeError


def _write_examples(path: Path, dataset: str, data_root) -> dict:
    """The first CHECK_N test examples of `dataset`, uint8 as load_split reads them, compressed; their record."""
    import numpy as np

    from cat_bench.data import load_split

    x, y = load_split(dataset, "test", data_root)
    x, y = x[:CHECK_N].numpy(), y[:CHECK_N].numpy()
    with open(path, "wb") as fh:
        np.savez_compressed(fh, x=x, y=y)
    return {"file": path.name, "sha256": sha256(path), "n_examples": len(y),
            "source": f"the first {len(y)} examples of {dataset}'s test split (cat_bench.data.load_split)"}


def model_card(run_dir: Path, name: str, ckpt: dict, digest: str, size: int, trained_with: str | None = None) -> dict:
    """card.json's content, without the check: what the model is, how it was trained and evaluated."""
    config = records.read_json(run_dir / records.CONFIG)
    identity = records.read_identity(run_dir)
    done = records.read_json(run_dir / records.DONE)
    history = records.read_jsonl(run_dir / records.HISTORY)
    sessions, earlier = records.training_sessions(run_dir)
    evaluation = records.read_json(run_dir / records.EVAL)
    info = dataset_info(identity["dataset"])
    return {
        "format": CARD_FORMAT,
        "name": name,
        "summary": summary(identity, int(ckpt["epoch"]), done["epochs"]),
        "run": run_dir.name,
        "identity": identity,
        "sources": config.get("sources", {}),
        "inputs": {"shape": list(info.shape), "range": "[0, 1] pixels; f normalises inside where its protocol says so",
                   "num_classes": info.num_classes, "test_eps": info.test_eps,
                   "clip": clips(info.family, identity["protocol"])},
        "weights": {"file": WEIGHTS, "sha256": digest, "bytes": size, "networks": sorted(ckpt["nets"]),
                    "checkpoint": records.BEST, "epoch": int(ckpt["epoch"]), "score": ckpt.get("score")},
        "training": {"trained_with": trained_with,
                     **training(run_dir, identity, config, done, history, sessions, earlier)},
        "evaluation": evaluation,
        "published": published_rows(identity),
    }


def summary(identity: dict, epoch: int, epochs: int) -> str:
    """One line: method, training eps, dataset, network, seed, protocol and the selected epoch."""
    from cat_bench.methods import get_method

    doc = (get_method(identity["method"]).__doc__ or identity["method"]).splitlines()[0].rstrip(".")
    return (f"{identity['method']} ({doc}), eps_train {format_eps(identity['eps'])}, on {identity['dataset']} with "
            f"{identity['arch']}, seed {identity['seed']}, {identity.get('protocol', 'valid')} protocol, "
            f"{identity['schedule']['name']} schedule: epoch {epoch} of {epochs}, the one its selection rule "
            f"({identity['selection']['rule']}) kept")


def training(run_dir: Path, identity: dict, config: dict, done: dict, history: list[dict],
             sessions: list[dict], earlier: int) -> dict:
    """How the run was trained: the command, where and how long (history, the sessions from its last start
    at epoch 0 and the number before it, config.json provenance)."""
    from cat_bench.methods import get_method

    command, note = train_command(identity, str(run_dir))
    health = {f"{key}_epochs": done.get(f"{key}_epochs", []) for key in get_method(identity["method"]).HEALTH_FLAGS}
    return {
        "command": command, "command_note": note, "suites": suites_with(run_dir.name),
        "provenance": config.get("provenance", {}), "epochs": len(history), "selected_epoch": done["best_epoch"],
        "selection_rule": done.get("selection"), **health,
        "train_seconds": sum(h.get("train_seconds", 0.0) for h in history),
        "wall_seconds": sum(h.get("seconds", 0.0) for h in history),
        "sessions": sessions, "sessions_before_restart": earlier,
        "started": _utc(sessions[0]["started"]) if sessions else None,
    }


def _utc(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(stamp))


def train_command(identity: dict, out: str) -> tuple[str | None, str]:
    """The `cat-bench train` command whose resolved config is this identity, and how it was checked.

    Options are given only where they differ from what the method, dataset and eps resolve to; the
    command is resolved again and kept only if it gives the run's config hash (its directory name).
    """
    from cat_bench.config import resolve_config

    method, dataset, eps = identity["method"], identity["dataset"], identity["eps"]
    argv = ["cat-bench", "train", "--method", method, "--dataset", dataset, "--eps", format_eps(eps)]
    kwargs = {"schedule": identity["schedule"]["name"], "protocol": identity["protocol"],
              "precision": identity["precision"]}
    if resolve_config(method, dataset, eps, schedule=kwargs["schedule"])["arch"] != identity["arch"]:
        argv += ["--arch", identity["arch"]]
    kwargs["arch"] = identity["arch"]
    for key, flag, default in (("schedule", "--schedule", "official"), ("protocol", "--protocol", "paper"),
                               ("precision", "--precision", "fp32")):
        if kwargs[key] != default:
            argv += [flag, kwargs[key]]
    base = resolve_config(method, dataset, eps, **kwargs)
    options = {"epochs": identity["schedule"]["epochs"] if identity["schedule"]["epochs"] != base["schedule"]["epochs"]
               else None,
               "batch_size": identity["schedule"]["batch_size"]
               if identity["schedule"]["batch_size"] != base["schedule"]["batch_size"] else None,
               "seed": identity["seed"] or None, "n_train": identity["n_train"],
               "select_on": None if identity["selection"]["on"] == "test" else identity["selection"]["on"],
               "select_n": identity["selection"]["n"]}
    for key, value in options.items():
        if value is not None:
            argv += ["--" + key.replace("_", "-"), str(value)]
    sets = {k: format_value(v) for k, v in identity["hparams"].items() if base["hparams"].get(k) != v}
    if sets:
        argv += ["--set", *(f"{k}={v}" for k, v in sets.items())]
    argv += ["--out", out]
    again = resolve_config(method, dataset, eps, overrides=sets, seed=options["seed"] or 0,
                           **{k: v for k, v in options.items() if k != "seed" and v is not None},
                           **{k: v for k, v in kwargs.items()})
    if records.config_hash(again) != records.config_hash(identity):
        return None, "no `cat-bench train` command resolves to this run's identity (its config hash differs)"
    return shlex.join(argv), "resolves to the run's identity: the same config hash"


def suites_with(run_name: str) -> list[str]:
    """The shipped suites that include this exact run (`cat-bench run --suite S` trains it among their others)."""
    from cat_bench.suite import SUITES, load_suite

    return [name for name in SUITES if any(spec.name == run_name for spec in load_suite(name).runs)]


def published_rows(identity: dict) -> list[dict]:
    """The paper's rows this model reproduces (same method, dataset, network, eps, a, b; paper protocol,
    official schedule), each with its published numbers, as the report matches them."""
    import math

    from cat_bench.paper import Target, load_published

    pub = load_published()
    rows = []
    for (table, row), lines in pub.groupby(["table", "row"], sort=False):
        first = lines.iloc[0]
        target = Target(first["method"], first["dataset"], first["arch"], first["eps"], float(first["eps_value"]),
                        float(first["a"]), float(first["b"]))
        if target.matches(identity):
            rows.append({"table": table, "row": row, "metrics": {m: float(v) for m, v in zip(lines["metric"], lines["mean"])
                                                                  if not math.isnan(v)}})
    return rows


# ---------------------------------------------------------------------------------------------
# Loading and checking a folder


def read_card(folder: Path) -> dict:
    """card.json of a model folder; UsageError when it is missing, CorruptRecord when it is not a card."""
    folder = Path(folder)
    if not is_model_folder(folder):
        raise UsageError(f"{folder} is not a model folder (no {CARD}); make one with cat-bench export RUN_DIR --name NAME")
    card = records.read_json(folder / CARD)
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise CorruptRecord(f"{folder / CARD} is not a {CARD_FORMAT!r}")
    if not isinstance(card.get("identity"), dict) or not isinstance(card.get("weights"), dict):
        raise CorruptRecord(f"{folder / CARD} has no identity or weights entry (a dict each); export the run again")
    if CONTENT_KEY in card and card[CONTENT_KEY] != _content_sha256(card):
        raise CorruptRecord(f"{folder / CARD} was edited after cat-bench wrote it (its content no longer hashes to "
                            f"its {CONTENT_KEY}): its numbers and identity cannot be trusted; export the run again")
    weights = card["weights"].get("file")
    if weights != WEIGHTS:
        raise CorruptRecord(f"{folder / CARD}: weights.file {weights!r} is not the folder's {WEIGHTS}; a model "
                            f"folder's weights are its own {WEIGHTS}, never a file elsewhere")
    return {**card, "identity": records.normalised(card["identity"])}


def write_card(folder: Path, card: dict) -> None:
    """card.json, with the SHA-256 of its own content (`CONTENT_KEY`), so an edit by hand is detected."""
    card = {k: v for k, v in card.items() if k != CONTENT_KEY}
    records.write_json(Path(folder) / CARD, {**card, CONTENT_KEY: _content_sha256(card)})


def _content_sha256(card: dict) -> str:
    """The SHA-256 of a card's content without its own hash (canonical JSON: sorted keys)."""
    content = {k: v for k, v in card.items() if k != CONTENT_KEY}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def verify_weights(folder: Path, card: dict) -> str:
    """The weights file's SHA-256 if it is the card's and the .sha256 file's; UsageError naming both otherwise."""
    folder = Path(folder)
    path = folder / card["weights"]["file"]
    if not path.is_file():
        raise UsageError(f"{path} is missing; the model folder is incomplete")
    digest = sha256(path)
    recorded = (folder / SHA256).read_text().split()[0] if (folder / SHA256).is_file() else None
    if digest != card["weights"]["sha256"] or digest != recorded:
        raise UsageError(f"{path} has SHA-256 {digest}, but the card records {card['weights']['sha256']} and "
                         f"{SHA256} {recorded}: the weights are not the exported ones; export the run again")
    return digest


def exported_from(run_name: str, identity: dict, models: Path) -> list[tuple[Path, dict]]:
    """(folder, card) of each model folder under `models` exported from a run of this name and identity (its
    configuration: the run's name is its identity's hash), by name."""
    models = Path(models)
    if not models.is_dir():
        return []
    wanted = records.normalised(identity)
    return [(folder, card) for folder, card in readable_cards(models)
            if card.get("run") == run_name and card["identity"] == wanted]


def readable_cards(models: Path, log=None) -> list[tuple[Path, dict]]:
    """(folder, card) of every model folder under `models` whose card can be read, by name; a damaged
    one is left out (named through `log`), never stopping what reads the others."""
    cards = []
    for folder in sorted(Path(models).iterdir()):
        if is_model_folder(folder):
            try:
                cards.append((folder, read_card(folder)))
            except CorruptRecord as err:
                if log is not None:
                    log(f"skipped {folder}: {err}")
    return cards


def load_networks(folder: Path, card: dict, device):
    """f (and g) built from the card's identity with the folder's weights loaded, f in eval mode."""
    from cat_bench.lazy import torch
    from cat_bench.networks import Networks

    nets = Networks(card["identity"], device)
    path = Path(folder) / card["weights"]["file"]
    records.check_archive(path)
    try:
        nets.load(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as err:  # a file that is not these networks' state dicts
        raise CorruptRecord(f"{path} does not load into {card['identity']['arch']}: {type(err).__name__}: {err}") from None
    nets.f.eval()
    return nets


def folder_examples(folder: Path, card: dict, n_examples: int | None, device):
    """The first `n_examples` of the folder's check examples on the device, pixels in [0,1], or None when the
    folder has fewer (or none, or all are asked for). UsageError when the file is not the card's."""
    record = card.get("check", {}).get("examples")
    if record is None or n_examples is None or n_examples > record["n_examples"]:
        return None
    import numpy as np

    from cat_bench.evaluate import examples_on
    from cat_bench.lazy import torch

    path = Path(folder) / record["file"]
    if not path.is_file():
        raise UsageError(f"{path} is missing; the model folder is incomplete")
    digest = sha256(path)
    if digest != record["sha256"]:
        raise UsageError(f"{path} has SHA-256 {digest}, but the card records {record['sha256']}: "
                         f"the check examples are not the exported ones; export the run again")
    with np.load(path, allow_pickle=False) as data:
        x, y = torch.from_numpy(data["x"][:n_examples]), torch.from_numpy(data["y"][:n_examples])
    return examples_on(x, y, device)


def measure_folder(folder: Path, card: dict, attacks: list[str], *, n_examples: int | None, eps: float | None,
                   batch_size: int, device, data_root=None, progress: bool = True, log=print) -> dict:
    """The export's check: the folder's f on the first `n_examples` test examples, {"key", "examples",
    "attacks": {name: {"accuracy", "correct", "settings"}}}, with the same presets, settings and seeding as
    `cat-bench eval RUN_DIR`. The examples are the folder's own (`folder_examples`) unless there are too
    few or `data_root` is given; then the dataset's test split. "examples" says which.
    """
    from cat_bench.evaluate import _settings, measure
    from cat_bench.networks import precision_context

    identity = card["identity"]
    info = dataset_info(identity["dataset"])
    precision_context("fp32", device)  # the paper's evaluation: fp32, TF32 off
    model = load_networks(folder, card, device).f
    x, y, source = check_examples(folder, card, n_examples, device, data_root)
    test_eps = eps if eps is not None else info.test_eps
    clip = clips(info.family, identity["protocol"])
    out = {"key": {"n_examples": len(y), "eps": test_eps}, "examples": source, "attacks": {}}
    for name in attacks:
        preset = eval_attack(info.family, name, test_eps, override=eps is not None)
        settings = _settings(name, preset, identity["seed"], clip)
        correct = measure(model, x, y, preset, settings, seed=identity["seed"], batch_size=batch_size, device=device,
                          progress=progress, log=log)
        out["attacks"][name] = {"accuracy": correct.sum().item() / len(correct), "correct": int(correct.sum().item()),
                                "settings": settings}
    return out


def check_examples(folder: Path, card: dict, n_examples: int | None, device, data_root=None):
    """(x, y, where they come from): the folder's own check examples when they suffice and no `data_root`
    is given, else the dataset's test split; both are the first test examples."""
    from cat_bench.evaluate import load_test_examples

    found = None if data_root is not None else folder_examples(folder, card, n_examples, device)
    if found is not None:
        return (*found, f"{card['check']['examples']['file']} (the model folder's)")
    dataset = card["identity"]["dataset"]
    return (*load_test_examples(dataset, n_examples, data_root, device), f"{dataset}'s test split")


def card_entry(run_dir: Path, result: dict, names: list[str], examples: str) -> dict:
    """An evaluation of a model folder in its results run directory (`external.evaluate_folder`: eval.json's
    content `result`) as `record_evaluation` keeps it in the card: per attack of `names`, its accuracy, count,
    settings, time and the indices of the examples it got wrong (from the per-example records)."""
    from cat_bench import per_example

    attacks = {}
    for name in names:
        entry = result["attacks"][name]
        _, correct = per_example.read(Path(run_dir) / entry["examples"])
        attacks[name] = {"accuracy": entry["accuracy"], "correct": int(correct.sum()), "settings": entry["settings"],
                         "seconds": entry["seconds"], "wrong": [int(i) for i in (~correct.astype(bool)).nonzero()[0]]}
    return {"key": {"n_examples": result["key"]["n_examples"], "eps": result["key"]["eps"]}, "examples": examples,
            "attacks": attacks}


def _check(folder: Path, card: dict, final: Path, device, batch_size: int, progress: bool) -> dict:
    """The card's check, measured from the weights and examples written to `folder` (renamed to `final`
    afterwards): natural and PGD-20 on the first CHECK_N examples, with the command that repeats it."""
    result = measure_folder(folder, card, list(CHECK_ATTACKS), n_examples=CHECK_N, eps=None, batch_size=batch_size,
                            device=device, progress=progress, log=lambda m: None)
    result.pop("examples")  # the card's check records its examples file instead
    return {**result, "batch_size": batch_size, "provenance": records.provenance(device),
            "command": f"cat-bench eval {shlex.quote(str(final))} --attacks {','.join(CHECK_ATTACKS)} "
                       f"--n-examples {CHECK_N}"}


def card_numbers(card: dict, n_examples: int, eps: float) -> dict[str, float]:
    """The card's accuracies (fractions) for these examples and eps: the check's and every evaluation's."""
    found = {}
    evaluation = card.get("evaluation", {})
    for entry in [card.get("check", {}), evaluation, *evaluation.get("earlier", []), *card.get(EVALUATIONS, [])]:
        key = entry.get("key", {})
        if key.get("n_examples") == n_examples and abs(key.get("eps", -1) - eps) < 1e-9:
            for name, a in entry.get("attacks", {}).items():
                found.setdefault(name, a["accuracy"])
    return found


def record_evaluation(folder: Path, card: dict, result: dict, *, device, batch_size: int, command: str) -> dict:
    """Add a `card_entry` to the card's further evaluations (`card.json` "evaluations": those
    measured after export, e.g. AutoAttack beside PGD-100) and rewrite card.json and README.md, each
    atomically. An evaluation of the same examples and eps is merged, a re-measured attack replacing its
    earlier number. Each entry keeps the indices of the examples every attack got wrong, so any two attacks
    compare on the same examples, and the gradient-masking flags of `evaluate.masking_flags`."""
    from cat_bench.evaluate import masking_flags

    folder = Path(folder)
    kept = [e for e in card.get(EVALUATIONS, []) if e["key"] != result["key"]]
    merged = next((e for e in card.get(EVALUATIONS, []) if e["key"] == result["key"]), {"attacks": {}})
    attacks = {**merged["attacks"], **result["attacks"]}
    entry = {"key": result["key"], "examples": result["examples"], "attacks": attacks,
             "flags": masking_flags({k: a["accuracy"] for k, a in attacks.items()}),
             "batch_size": batch_size, "provenance": records.provenance(device), "command": command}
    card = {**card, EVALUATIONS: [*kept, entry]}
    write_card(folder, card)
    records.write_text(folder / README, readme(card))
    return entry


def attack_disagreement(entry: dict, a: str, b: str) -> tuple[int, int]:
    """(examples `a` gets wrong that `b` gets right, the reverse) in one recorded evaluation."""
    wrong_a, wrong_b = set(entry["attacks"][a]["wrong"]), set(entry["attacks"][b]["wrong"])
    return len(wrong_a - wrong_b), len(wrong_b - wrong_a)


# ---------------------------------------------------------------------------------------------
# The card for people


def readme(card: dict) -> str:
    """README.md of a model folder, from its card."""
    ident, tr, ev, check = card["identity"], card["training"], card["evaluation"], card["check"]
    prov = tr["provenance"]
    hw = prov.get("hardware", {})
    lines = [f"# {card['name']}", "", card["summary"] + ".", "",
             f"Exported by `cat-bench export` from run `{card['run']}` (`{card['weights']['checkpoint']}`, epoch "
             f"{card['weights']['epoch']}). `card.json` holds everything below in machine-readable form.", "",
             "## Files", "",
             f"- `{WEIGHTS}`: the state dicts of {' and '.join(card['weights']['networks'])} "
             f"({card['weights']['bytes']:,} bytes), tensors only: `torch.load(path, weights_only=True)`",
             f"- `{SHA256}`: SHA-256 `{card['weights']['sha256']}` (`sha256sum -c {SHA256}`)",
             f"- `{check['examples']['file']}`: {check['examples']['source']}, SHA-256 "
             f"`{check['examples']['sha256']}`: the check below runs on them, offline",
             f"- `{CARD}`, `{README}`: this card", "",
             "## Use", "",
             "```python",
             "import json, torch",
             "from cat_bench.networks import Networks",
             "",
             f"card = json.load(open('{CARD}'))",
             "nets = Networks(card['identity'], torch.device('cpu'))",
             f"nets.load(torch.load('{WEIGHTS}', weights_only=True))",
             "f = nets.f.eval()  # inputs: " + f"{'x'.join(map(str, card['inputs']['shape']))}, {card['inputs']['range']}",
             "```", "",
             f"Check it (verifies the SHA-256, then evaluates; writes nothing): `{check['command']}`", "",
             "## Evaluation", ""]
    lines += _accuracy_table(ev["attacks"], ev["key"]["n_examples"], ev["key"]["eps"])
    lines += ["", f"Attacks as `cat-bench eval` runs them (eps {format_eps(ev['key']['eps'])}, "
              f"{'clipped to [0,1]' if card['inputs']['clip'] else 'not clipped to [0,1]: the paper protocol'}); "
              f"settings of each in `card.json` (`evaluation`)."
              + (f" Gradient-masking flags: {'; '.join(f['flag'] for f in ev['flags'])}." if ev.get("flags") else ""), ""]
    for row in card["published"]:
        nums = ", ".join(f"{m} {v:g}" for m, v in row["metrics"].items())
        lines.append(f"The paper's Table {row['table']}, {row['row']}: {nums}.")
    lines += _further_evaluations(card)
    lines += ["", f"### Check: the first {check['key']['n_examples']} test examples", ""]
    lines += _accuracy_table(check["attacks"], check["key"]["n_examples"], check["key"]["eps"])
    lines += ["", f"Measured at export time from `{WEIGHTS}` (batch {check['batch_size']}, "
              f"{check['provenance']['hardware'].get('device')}, {check['provenance']['hardware'].get('cpu')}, "
              f"{check['provenance']['hardware'].get('threads')} threads, kernels "
              f"{check['provenance']['hardware'].get('kernels')}, torch {check['provenance']['torch']}). Another thread "
              f"count or CPU kernel level can move a number by an example (README, \"Determinism\").", "",
             "## Training", "",
             f"- Command: `{tr['command']}` ({tr['command_note']})" if tr["command"] else f"- Command: {tr['command_note']}",
             f"- Trained with: `{tr['trained_with']}`" if tr["trained_with"] else "- Trained with: not recorded at export",
             f"- Shipped suites with this run (`cat-bench run --suite S` trains it among the suite's others): "
             f"{', '.join(tr['suites']) or 'none'}",
             f"- Protocol: {card['sources'].get('protocol', 'not recorded')}",
             f"- Epochs trained: {tr['epochs']}, selected epoch {tr['selected_epoch']} (rule {tr['selection_rule']})"
             + _health_note(card["identity"]["method"], tr),
             f"- Time: {_duration(tr['train_seconds'])} of training, {_duration(tr['wall_seconds'])} with the "
             f"per-epoch selection measurement (history.jsonl), in {len(tr['sessions'])} training session(s) "
             f"(sessions.jsonl), the first started {tr['started']}"
             + (f"; {tr['sessions_before_restart']} earlier session(s), before the run started again from epoch 0, "
                f"trained nothing it holds" if tr.get("sessions_before_restart") else ""),
             f"- Machine (config.json): {hw.get('device', '?')}, {hw.get('gpu') or hw.get('cpu', '?')}, "
             f"{hw.get('threads', '?')} threads" + (f", kernels {hw['kernels']}" if hw.get("kernels") else "")
             + f"; torch {prov.get('torch', '?')}, cat-bench {prov.get('cat_bench', '?')}, "
             f"git {prov.get('git_commit', '?')}", "",
             "Hyperparameters and their sources:", ""]
    for key, value in sorted(ident["hparams"].items()):
        lines.append(f"- `{key}` = {value!r}: {card['sources'].get('hparams', {}).get(key, '')}")
    lines += ["", "## Identity", "", "```json", json.dumps(ident, indent=2, sort_keys=True), "```", ""]
    return "\n".join(lines)


def _health_note(method: str, training: dict) -> str:
    """"; mask flagged in epochs [...]" for each health flag of the method (`Method.HEALTH_FLAGS`) the run raised."""
    from cat_bench.methods import get_method

    return "".join(f"; {what} flagged in epochs {training[f'{key}_epochs']}"
                   for key, what in get_method(method).HEALTH_FLAGS.items() if training.get(f"{key}_epochs"))


def _further_evaluations(card: dict) -> list[str]:
    """README lines of the evaluations recorded after export, each with the command that measured it."""
    lines = []
    for entry in card.get(EVALUATIONS, []):
        n, eps = entry["key"]["n_examples"], entry["key"]["eps"]
        lines += ["", f"### Beyond the paper: the first {n} test examples", ""]
        lines += _accuracy_table(entry["attacks"], n, eps)
        lines += ["", f"Measured by `{entry['command']}` ({entry['provenance']['hardware'].get('device')}, "
                  f"{entry['provenance']['hardware'].get('cpu') or entry['provenance']['hardware'].get('gpu')}, "
                  f"{entry['provenance']['hardware'].get('threads')} threads, torch {entry['provenance']['torch']})."]
        if {"autoattack", "pgd100"} <= set(entry["attacks"]):
            aa, pgd = entry["attacks"]["autoattack"], entry["attacks"]["pgd100"]
            only_aa, only_pgd = attack_disagreement(entry, "autoattack", "pgd100")
            lines.append(f"AutoAttack (standard, Linf, every iterate in [0,1]) leaves {100 * aa['accuracy']:.2f}% "
                         f"where PGD-100 ({'clipped' if pgd['settings']['clip'] else 'not clipped'}) leaves "
                         f"{100 * pgd['accuracy']:.2f}%: it breaks {only_aa} examples that PGD-100 leaves, and "
                         f"PGD-100 breaks {only_pgd} that it leaves.")
        flags = "; ".join(f"{f['flag']} ({f['detail']})" for f in entry["flags"])
        lines.append(f"Gradient-masking flags: {flags}." if flags else "Gradient-masking flags: none.")
    return lines


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 7200 else f"{seconds / 60:.1f} min"


def _accuracy_table(attacks: dict, n: int, eps: float) -> list[str]:
    """A markdown table of the attacks' accuracies in the paper's column order."""
    from cat_bench.results import in_attack_order

    lines = ["| attack | accuracy (%) | test examples | eps |", "|---|---|---|---|"]
    return lines + [f"| {name} | {100 * attacks[name]['accuracy']:.2f} | {n} | {format_eps(eps)} |"
                    for name in in_attack_order(attacks)]
