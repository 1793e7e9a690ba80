"""RobustBench-format submission of a finished run: `cat-bench submit RUN_DIR --name NAME`.

RobustBench adds a model from an issue or pull request carrying `model_info/<dataset>/<threat>/
<Name>.json`, a checkpoint and a model-zoo entry; its `load_model` then loads
`{model_dir}/<dataset>/<threat>/<Name>.pt`. `export` writes all of these under one folder:

    OUT/model_info/<dataset>/Linf/<Name>.json   RobustBench's fields, accuracies from eval.json
    OUT/models/<dataset>/Linf/<Name>.pt         the classifier's state dict (normalization inside,
                                                inputs in [0,1], no "model."/"module." in any key)
    OUT/model_zoo_entry.py                      the entry to paste into robustbench/model_zoo/
    OUT/autoattack.log                          the log of the AutoAttack run behind autoattack_acc

`verify` (the `robustbench` extra) checks the folder with RobustBench itself: the entry is
registered in its model zoo at runtime, `robustbench.utils.load_model` loads the checkpoint from
OUT/models (no download), its logits and inputs must equal cat-bench's own on the first test
examples, and `robustbench.eval.benchmark` runs AutoAttack on a few of them
(OUT/verification.json, OUT/robustbench_autoattack.log).
"""

from __future__ import annotations

import json
import re
import runpy
import shutil
import time
from collections import OrderedDict
from dataclasses import dataclass
from fractions import Fraction
from importlib.metadata import version
from pathlib import Path

from cat_bench import records
from cat_bench.data import dataset_info, load_split, resolve_data_root
from cat_bench.errors import UsageError
from cat_bench.eval_attacks import AUTOATTACK_STANDARD
from cat_bench.lazy import torch
from cat_bench.methods import get_method
from cat_bench.rundir import claim
from cat_bench.shell import command

THREAT_MODEL = "Linf"
ROBUSTBENCH_DATASETS = ("cifar10", "cifar100", "imagenet")  # what RobustBench hosts
TEST_SET_SIZE = {"cifar10": 10000, "cifar100": 10000}  # the cat-bench datasets RobustBench hosts
LINF_EPS = Fraction(8, 255)  # RobustBench's CIFAR-10/100 Linf threat model
VERIFY_N = 100  # examples `verify` runs robustbench.eval.benchmark on, by default

# RobustBench's model-zoo names: Surname (several surnames, '-' allowed, as in
# Moosavi-Dezfooli2019Robustness, JinRinard2020Manifold) + year + first keyword of the title
# (capitalized), then optional "_" suffixes for variants (Sehwag2021Proxy_R18, Cui2023Decoupled_WRN-28-10).
NAME_RULE = re.compile(r"[A-Z][A-Za-z-]*(?:19|20)\d{2}[A-Z][A-Za-z0-9-]*(?:_[A-Za-z0-9-]+)*")
NAME_RULE_TEXT = ("RobustBench names a model Surname + year + keyword of the paper, then optional _suffixes "
                  "(letters, digits, '-'), at most 80 characters, e.g. Huang2021Calibrated or "
                  "Huang2021Calibrated_PRN18")


@dataclass(frozen=True)
class PaperInfo:
    """The paper fields of a model_info JSON (RobustBench's `name` is the paper's title)."""

    title: str
    authors: str
    venue: str
    link: str
    reported: str = ""  # the paper's own robust accuracy, percent, or "" if it reports none




class VerificationFailed(RuntimeError):
    """RobustBench loaded or evaluated the exported model differently from cat-bench."""


def check_robustbench_name(name: str) -> str:
    """Return `name` if RobustBench would accept it as a model-zoo name; else UsageError with the rule."""
    if len(name) > 80 or not NAME_RULE.fullmatch(name):
        raise UsageError(f"--name {name!r} is not a RobustBench model name; {NAME_RULE_TEXT}")
    return name


def robustbench_architecture(arch: str) -> str:
    """cat-bench's architecture name as RobustBench's model_info writes it ("PreActResNet-18", "WideResNet-34-10")."""
    if arch == "preact-resnet18":
        return "PreActResNet-18"
    wrn = re.fullmatch(r"wrn-(\d+)-(\d+)", arch)
    if wrn:
        return f"WideResNet-{wrn.group(1)}-{wrn.group(2)}"
    return {"smallcnn": "SmallCNN"}.get(arch, arch)


def percent(accuracy: float) -> str:
    """An accuracy in [0,1] as RobustBench writes it: percent with two decimals ("84.22")."""
    return f"{100 * accuracy:.2f}"


def paper_for(method: str, title=None, authors=None, venue=None, link=None, reported=None) -> PaperInfo:
    """The paper fields: the given ones, the method's own paper (`Method.PAPER`: CAT's) for the rest; a
    method without one must give all."""
    given = {"title": title, "authors": authors, "venue": venue, "link": link}
    own = get_method(method).PAPER
    if own is not None:
        base = PaperInfo(**own)
    else:
        missing = [f"--{k}" for k, v in given.items() if v is None]
        if missing:
            raise UsageError(f"the run's method {method!r} is not CAT, so its paper is not cat-bench's; give "
                             f"{', '.join(missing)} (RobustBench's model_info names the paper the model comes from)")
        base = PaperInfo("", "", "", "")
    if reported not in (None, ""):
        try:
            value = float(reported)
        except ValueError:
            value = -1.0
        if not 0 <= value <= 100:
            raise UsageError(f"--reported {reported!r} is not a percentage in [0, 100] (e.g. 53.12)")
    return PaperInfo(title=title if title is not None else base.title,
                     authors=authors if authors is not None else base.authors,
                     venue=venue if venue is not None else base.venue,
                     link=link if link is not None else base.link,
                     reported=reported if reported is not None else base.reported)


def eval_command(run_dir: Path, n_examples: int | None) -> str:
    """The command that produces the AutoAttack evaluation a submission needs."""
    extra = ["--n-examples", n_examples] if n_examples is not None else []
    return command("eval", run_dir, "--attacks", "natural,autoattack", *extra)


def read_run(run_dir: Path) -> dict:
    """The run's resolved config, after the refusals that need no evaluation: no run, a dataset
    RobustBench does not host, an unfinished run."""
    run_dir = Path(run_dir)
    if not (run_dir / records.CONFIG).is_file():
        raise UsageError(f"{run_dir} is not a run directory (no {records.CONFIG}); "
                         f"train one with cat-bench train --out")
    config = records.read_identity(run_dir)
    dataset = config["dataset"]
    if dataset not in ROBUSTBENCH_DATASETS:
        raise UsageError(f"run {run_dir} is on {dataset}, which RobustBench does not host (it has "
                         f"{', '.join(ROBUSTBENCH_DATASETS[:-1])} and {ROBUSTBENCH_DATASETS[-1]}); "
                         f"only cifar10 and cifar100 runs can be submitted")
    if not config.get("train_attack", {}).get("clip", True) or not config["selection"]["attack"].get("clip", True):
        raise UsageError(f"run {run_dir} was trained under the {config['protocol']!r} protocol, whose inputs leave "
                         f"[0,1]; RobustBench takes models trained and evaluated on valid images: train it again "
                         f"with --protocol valid")
    if not (run_dir / records.DONE).is_file():
        raise UsageError(f"run {run_dir} is unfinished (no `{records.DONE}` marker); finish training first: "
                         f"{command('train', '...', '--resume', '--out', run_dir)} with the options it was started with "
                         f"(recorded in {run_dir / records.CONFIG})")
    return config


def finished_autoattack(run_dir: Path, config: dict, best_epoch: int, n_examples: int | None) -> dict:
    """eval.json, checked to hold a finished standard AutoAttack and the natural accuracy of the
    current best checkpoint at eps 8/255, on the full test set or on exactly `n_examples` points."""
    run_dir = Path(run_dir)
    total = TEST_SET_SIZE[config["dataset"]]
    if n_examples is not None and not 0 < n_examples <= total:
        raise UsageError(f"--n-examples {n_examples!r} must be between 1 and {total} (the test set)")
    redo = eval_command(run_dir, n_examples)
    path = run_dir / records.EVAL
    result = records.read_json(path) if path.is_file() else {}
    attacks = result.get("attacks", {})
    if "autoattack" not in attacks:
        why = "is missing" if not path.is_file() else "has no autoattack entry"
        raise UsageError(f"run {run_dir} has no finished AutoAttack evaluation ({records.EVAL} {why}); RobustBench "
                         f"ranks by AutoAttack, so produce one with: {redo}")
    if "natural" not in attacks:
        raise UsageError(f"{path} has AutoAttack but no natural accuracy (RobustBench's clean_acc); run: {redo}")
    key = result["key"]
    if key.get("checkpoint") != records.BEST or key.get("epoch") != best_epoch:
        raise UsageError(f"{path} evaluated {key.get('checkpoint')} of epoch {key.get('epoch')}, but "
                         f"{run_dir / records.BEST} is now epoch {best_epoch}; re-evaluate with: {redo}")
    if abs(key["eps"] - float(LINF_EPS)) > 1e-9:
        raise UsageError(f"{path} was evaluated at eps {key['eps']:.6g}, but RobustBench's {config['dataset']} "
                         f"Linf leaderboard uses eps {LINF_EPS}; re-evaluate at the default eps with: {redo}")
    settings = attacks["autoattack"]["settings"]
    if settings.get("subattacks") != AUTOATTACK_STANDARD or settings.get("norm") != "Linf":
        raise UsageError(f"{path}'s AutoAttack is not the standard Linf version ({settings.get('subattacks')}); "
                         f"re-evaluate with: {redo}")
    n = key["n_examples"]
    if n_examples is None and n < total:
        raise UsageError(f"{path}'s AutoAttack ran on the first {n} of the {total} test points; RobustBench reports "
                         f"the full test set: run {eval_command(run_dir, None)}, or pass --n-examples {n} to submit "
                         f"it as it is (the JSON's footnote then says so)")
    if n_examples is not None and n != n_examples:
        raise UsageError(f"{path}'s AutoAttack ran on {n} test points, not --n-examples {n_examples}; "
                         f"run: {redo}")
    if not (run_dir / "autoattack.log").is_file():
        raise UsageError(f"{run_dir / 'autoattack.log'} (the log behind autoattack_acc) is missing; delete {path} "
                         f"and re-evaluate with: {redo}")
    return result


def _footnote(user: str | None, n: int, total: int, flags: list[dict], config: dict) -> str:
    parts = [user.strip()] if user and user.strip() else []
    parts.append(f"Trained by cat-bench under the {config.get('protocol', 'valid')!r} protocol (inputs in [0,1]) "
                 f"with the {config['schedule'].get('name', 'official')!r} schedule.")
    if n < total:
        parts.append(f"AutoAttack (standard, pyautoattack) on the first {n} of the {total} test points, not the "
                     f"full test set.")
    if flags:
        parts.append("cat-bench flagged possible gradient masking: "
                     + "; ".join(f"{f['flag']} ({f['detail']})" for f in flags) + ".")
    return " ".join(parts)


def zoo_entry_source(name: str, config: dict, gdrive_id: str | None) -> str:
    """The model-zoo entry to paste into RobustBench: a short Python file defining ENTRY."""
    info = dataset_info(config["dataset"])
    arch = config["arch"]
    gdrive = gdrive_id or f"UPLOAD models/{info.name}/{THREAT_MODEL}/{name}.pt AND PUT ITS GOOGLE DRIVE ID HERE"
    return f'''"""RobustBench model-zoo entry for {name} (written by `cat-bench submit`).

Add ENTRY to the `linf` OrderedDict of robustbench/model_zoo/{info.name}.py, upload
models/{info.name}/{THREAT_MODEL}/{name}.pt (its Google Drive id goes in "gdrive_id") and add
model_info/{info.name}/{THREAT_MODEL}/{name}.json to RobustBench's model_info/ folder.

The model is cat-bench's {robustbench_architecture(arch)} ("{arch}") with the input normalization
inside it, so it takes [0,1] pixels; its state-dict keys are "normalize.mean", "normalize.std" and
"net.*" (cat_bench.models.Classifier). Vendor cat_bench/models/ into
robustbench/model_zoo/architectures/ if RobustBench should not depend on cat-bench.
"""

from cat_bench.models import build_classifier

ENTRY = ({name!r}, {{
    "model": lambda: build_classifier({arch!r}, {info.num_classes}, {info.shape[0]}, {info.mean!r}, {info.std!r}),
    "gdrive_id": {gdrive!r},
}})
'''


def _write_text(path: Path, text: str) -> None:
    records._atomic(path, lambda fh: fh.write(text.encode()))


def write_submission(run_dir: Path, name: str, out: Path, *, paper: PaperInfo | None = None,
                     n_examples: int | None = None, footnote: str | None = None, gdrive_id: str | None = None) -> dict:
    """Write the RobustBench submission of a finished, AutoAttack-evaluated run into `out`.

    Returns {"model_info", "checkpoint", "model_zoo_entry", "autoattack_log": paths, "info": the JSON}.
    Refusals (UsageError): a name RobustBench would not accept, no run, a dataset RobustBench does
    not host, an unfinished run, no (current, standard, eps 8/255) AutoAttack evaluation, one on
    fewer test points than the full set unless `n_examples` says so.
    """
    from cat_bench.models import build_classifier

    check_robustbench_name(name)
    run_dir, out = Path(run_dir), Path(out)
    config = read_run(run_dir)
    paper = paper or paper_for(config["method"])
    ckpt = records.load_checkpoint(run_dir / records.BEST)
    try:
        state, best_epoch = ckpt["nets"]["f"], int(ckpt["epoch"])
    except (KeyError, TypeError, ValueError) as err:
        raise UsageError(f"corrupt checkpoint {run_dir / records.BEST}: {type(err).__name__}: {err}") from None
    result = finished_autoattack(run_dir, config, best_epoch, n_examples)

    info = dataset_info(config["dataset"])
    state = OrderedDict((k, v.detach().cpu().contiguous()) for k, v in state.items())
    bad = [k for k in state if "model." in k or "module." in k]
    if bad:
        raise UsageError(f"checkpoint keys {bad[:3]} contain 'model.' or 'module.', which RobustBench's load_model "
                         f"strips; architecture {config['arch']!r} cannot be exported as it is")
    model = build_classifier(config["arch"], info.num_classes, info.shape[0], info.mean, info.std)
    model.load_state_dict(state, strict=True)  # what RobustBench's _safe_load_state_dict will do

    n, total = result["key"]["n_examples"], TEST_SET_SIZE[info.name]
    model_info = {
        "link": paper.link,
        "name": paper.title,
        "authors": paper.authors,
        "additional_data": False,
        "number_forward_passes": 1,
        "dataset": info.name,
        "venue": paper.venue,
        "architecture": robustbench_architecture(config["arch"]),
        "eps": str(LINF_EPS),
        "clean_acc": percent(result["attacks"]["natural"]["accuracy"]),
        "reported": paper.reported,
        "autoattack_acc": percent(result["attacks"]["autoattack"]["accuracy"]),
        "footnote": _footnote(footnote, n, total, result.get("flags", []), config),
        "unreliable": bool(result.get("flags")),
    }
    paths = {
        "model_info": out / "model_info" / info.name / THREAT_MODEL / f"{name}.json",
        "checkpoint": out / "models" / info.name / THREAT_MODEL / f"{name}.pt",
        "model_zoo_entry": out / "model_zoo_entry.py",
        "autoattack_log": out / "autoattack.log",
    }
    claim(out, "submission")  # never over a folder of someone else's files
    _write_text(paths["model_info"], json.dumps(model_info, indent=2) + "\n")
    records.save_checkpoint(paths["checkpoint"], state)
    _write_text(paths["model_zoo_entry"], zoo_entry_source(name, config, gdrive_id))
    _atomic_copy(run_dir / "autoattack.log", paths["autoattack_log"])
    return {**paths, "info": model_info}


def _atomic_copy(src: Path, dst: Path) -> None:
    def write(fh):
        with open(src, "rb") as source:
            shutil.copyfileobj(source, fh)

    records._atomic(dst, write)


def verify_submission(out: Path, name: str, run_dir: Path, *, data_root=None, n_examples: int = VERIFY_N,
                      batch_size: int | None = None, device: torch.device | None = None, log=print) -> dict:
    """Check an exported submission with RobustBench itself; writes and returns OUT/verification.json.

    Registers OUT/model_zoo_entry.py's ENTRY in RobustBench's model zoo, loads OUT/models/... with
    `robustbench.utils.load_model` (downloads disabled), checks that RobustBench's test inputs and
    the loaded model's logits equal cat-bench's on the first `n_examples` test points, then runs
    `robustbench.eval.benchmark` (standard AutoAttack, eps 8/255) on them, whose clean accuracy must
    equal cat-bench's. The test data must already be under the data root (RobustBench's data_dir).
    Raises UsageError without the `robustbench` extra, VerificationFailed when a check fails.
    """
    from cat_bench import robustbench_compat as compat
    from cat_bench.evaluate import correct_under, default_batch_size
    from cat_bench.models import build_classifier
    from cat_bench.networks import resolve_device

    if not compat.available():
        raise UsageError("--verify needs the robustbench extra: pip install -e '.[robustbench]' "
                         "(robustbench==1.1.1, setuptools<81)")
    if n_examples < 1:
        raise UsageError(f"--verify-n {n_examples!r} must be a positive integer")
    out, run_dir = Path(out), Path(run_dir)
    config = read_run(run_dir)
    dataset = config["dataset"]
    device = device or resolve_device(None)
    batch_size = batch_size or default_batch_size(device)
    root = resolve_data_root(data_root)
    entry = runpy.run_path(str(out / "model_zoo_entry.py"))["ENTRY"]
    if entry[0] != name:
        raise UsageError(f"{out / 'model_zoo_entry.py'} is the entry of {entry[0]!r}, not {name!r}; export it again")

    rb = compat.import_robustbench()
    from robustbench.data import get_preprocessing, load_clean_dataset
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    ds, tm = BenchmarkDataset(dataset), ThreatModel(THREAT_MODEL)
    _check_free_in_zoo(dataset, name)
    x, y = load_split(dataset, "test", root, download=False)  # UsageError naming the root if absent
    x, y = x[:n_examples].float().div_(255), y[:n_examples]
    n = len(y)
    info = dataset_info(dataset)
    ours = build_classifier(config["arch"], info.num_classes, info.shape[0], info.mean, info.std)
    ours.load_state_dict(records.load_checkpoint(run_dir / records.BEST)["nets"]["f"])
    ours = ours.to(device).eval()
    t0 = time.time()
    failures = []
    with compat.register(dataset, name, entry[1], THREAT_MODEL):
        theirs = rb.utils.load_model(name, model_dir=str(out / "models"), dataset=dataset,
                                     threat_model=THREAT_MODEL).to(device).eval()
        x_rb, y_rb = load_clean_dataset(ds, n, str(root), get_preprocessing(ds, tm, name, None))
        inputs_equal = torch.equal(x_rb, x) and torch.equal(y_rb, y)
        if not inputs_equal:
            failures.append("RobustBench's test inputs differ from cat-bench's")
        diff, scale = 0.0, 1.0
        with torch.no_grad():
            for i in range(0, n, batch_size):
                xb = x[i:i + batch_size].to(device)
                a, b = ours(xb), theirs(xb)
                diff = max(diff, (a - b).abs().max().item())
                scale = max(scale, a.abs().max().item())
        if diff > 1e-5 * scale:
            failures.append(f"logits of RobustBench's load_model differ from cat-bench's by {diff:.3g}")
        clean_ours = correct_under(ours, x.to(device), y.to(device), None, batch_size).float().mean().item()
        log(f"robustbench.eval.benchmark: standard AutoAttack on {n} test points ({device})")
        torch.manual_seed(config["seed"])
        clean_rb, robust_rb = rb.eval.benchmark(
            theirs, n_examples=n, dataset=dataset, threat_model=THREAT_MODEL, to_disk=False, model_name=name,
            data_dir=str(root), device=device, batch_size=batch_size, eps=float(LINF_EPS),
            log_path=str(out / "robustbench_autoattack.log"))
    if abs(clean_rb - clean_ours) > 1e-9:
        failures.append(f"RobustBench's clean accuracy {clean_rb:.4f} differs from cat-bench's {clean_ours:.4f}")
    if robust_rb > clean_rb:
        failures.append(f"robust accuracy {robust_rb:.4f} exceeds clean accuracy {clean_rb:.4f}")
    report = {
        "name": name, "dataset": dataset, "threat_model": THREAT_MODEL, "eps": str(LINF_EPS),
        "robustbench": version("robustbench"), "pyautoattack": version("pyautoattack"), "device": str(device),
        "load_model": str(Path("models") / dataset / THREAT_MODEL / f"{name}.pt"),
        "n_examples": n, "inputs_equal": inputs_equal, "max_abs_logit_diff": diff,
        "clean_acc_cat_bench": clean_ours, "clean_acc_robustbench": clean_rb, "autoattack_acc_robustbench": robust_rb,
        "autoattack_log": "robustbench_autoattack.log", "seconds": time.time() - t0,
        "passed": not failures, "failures": failures,
    }
    records.write_json(out / "verification.json", report)
    if failures:
        raise VerificationFailed("; ".join(failures) + f" (see {out / 'verification.json'})")
    return report


def _check_free_in_zoo(dataset: str, name: str) -> None:
    """UsageError when RobustBench's model zoo already has `name` (verification registers it there)."""
    from cat_bench import robustbench_compat as compat

    compat.import_robustbench()
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel
    from robustbench.model_zoo.models import model_dicts

    if name in model_dicts[BenchmarkDataset(dataset)][ThreatModel(THREAT_MODEL)]:
        raise UsageError(f"RobustBench's {dataset}/{THREAT_MODEL} model zoo already has a model named {name!r}; "
                         f"choose another --name")


def submit(run_dir: Path, name: str, out: Path, *, paper: PaperInfo | None = None, n_examples: int | None = None,
           footnote: str | None = None, gdrive_id: str | None = None, verify_it: bool = False,
           data_root=None, verify_n: int = VERIFY_N, batch_size: int | None = None,
           device: torch.device | None = None, log=print) -> dict:
    """`export`, then (with `verify_it`) `verify`; returns export's paths with "verification" added."""
    from cat_bench import robustbench_compat as compat

    if verify_it and not compat.available():
        raise UsageError("--verify needs the robustbench extra: pip install -e '.[robustbench]' "
                         "(robustbench==1.1.1, setuptools<81)")
    if verify_it:
        _check_free_in_zoo(read_run(run_dir)["dataset"], name)  # before anything is written
    written = write_submission(run_dir, name, out, paper=paper, n_examples=n_examples, footnote=footnote, gdrive_id=gdrive_id)
    written["verification"] = None
    if verify_it:
        written["verification"] = verify_submission(out, name, run_dir, data_root=data_root, n_examples=verify_n,
                                         batch_size=batch_size, device=device, log=log)
    return written
