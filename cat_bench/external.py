"""Evaluate any model under the paper's attacks: an "external" run directory for a model cat-bench did not train.

`cat-bench eval SOURCE --dataset D [--arch A] [--results R]` takes, besides run directories and
model folders, a SOURCE that is

    FILE.pt / .pth      a state dict (or cat-bench's {"f": state dict, ...}), loaded with
                        torch.load(weights_only=True) into `--arch` built for `--dataset`
                        (cat_bench.models.build_classifier, with the dataset's normalisation inside)
    FILE.pt2            a torch.export program (torch.export.load(...).module())
    FILE (TorchScript)  a TorchScript archive (torch.jit.load), while torch still loads them
    robustbench:NAME    RobustBench's model NAME through robustbench.utils.load_model from a local
                        model directory (`--model-dir`, {model_dir}/{dataset}/Linf/NAME.pt), with
                        RobustBench's downloads disabled
    module:function     a Python entry point returning an nn.Module (the working directory is on
                        the import path)

The model is put in eval mode and evaluated by the same code as a trained run
(cat_bench.evaluate.attack_all: setup checks, attacks, per-example records, worst case), inputs in
[0, 1] clipped to [0, 1] (RobustBench's convention), torch seeded with `--seed` (default 0). Its
run directory is R/external/NAME, NAME = records.run_name of its identity (method "external",
dataset, arch, the dataset's test eps, the source and its SHA-256), holding

    external.json   what was loaded: source, kind, file, SHA-256 (of the file; of the module's
                    source file for an entry point), how it was loaded, the model's class and size
    config.json     {"identity": ...} as trained runs have, so `results`, the leaderboard and the
                    report list it beside trained runs of the same dataset
    done            {"best_epoch": 0, "external": true}: nothing to train
    eval.json, examples/   as for a trained run

The same SOURCE evaluated again reuses the directory and skips finished attacks; a changed file
has another SHA-256 and so another directory. A model folder (`cat-bench eval FOLDER`,
`evaluate_folder`) gets such a directory too, kind "model-folder", named by its card's name, with
the card's network, protocol and seed: the folder itself is not written.
"""

from __future__ import annotations

import hashlib
import importlib
import re
import sys
import zipfile
from pathlib import Path

from cat_bench import records
from cat_bench.data import DATASETS, dataset_info
from cat_bench.errors import CorruptRecord, UsageError
from cat_bench.lazy import torch

FOLDER = "external"
INFO = "external.json"
FORMAT = "cat-bench external model 1"
KINDS = ("state-dict", "torch-export", "torchscript", "robustbench", "entry-point", "model-folder")
ENTRY_POINT = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
THREAT_MODEL = "Linf"
SOURCES = ("a run directory, a model folder (cat-bench export), a state-dict file (.pt/.pth with --arch), "
           "a torch.export program (.pt2), a TorchScript file, robustbench:NAME, or module:function")


def is_external(source: str) -> bool:
    """Whether `cat-bench eval SOURCE` names an external model rather than a run directory or model folder."""
    path = Path(source)
    if path.is_dir():
        return False
    return path.is_file() or source.startswith("robustbench:") or bool(ENTRY_POINT.fullmatch(source))


def kind_of(source: str) -> str:
    """Which loader a SOURCE needs (KINDS); UsageError naming it and what is allowed otherwise."""
    if source.startswith("robustbench:"):
        if not source.partition(":")[2]:
            raise UsageError(f"{source!r} names no model; give robustbench:NAME, e.g. robustbench:Standard")
        return "robustbench"
    path = Path(source)
    if path.is_file():
        if path.suffix == ".pt2":
            return "torch-export"
        if zipfile.is_zipfile(path) and any(n.endswith("/constants.pkl") or n == "constants.pkl"
                                            for n in zipfile.ZipFile(path).namelist()):
            return "torchscript"
        return "state-dict"
    if ENTRY_POINT.fullmatch(source):
        return "entry-point"
    raise UsageError(f"{source!r} is none of: {SOURCES}")


def check_options(kind: str, source: str, *, arch: str | None, dataset: str | None, model_dir) -> str:
    """The dataset to evaluate on, after checking that the options fit the kind of source."""
    if dataset is None and kind != "robustbench":
        raise UsageError(f"{source!r}: give --dataset (one of {', '.join(DATASETS)}) for an external model")
    dataset = dataset or "cifar10"
    dataset_info(dataset)  # UsageError for an unknown one
    if kind == "state-dict" and arch is None:
        from cat_bench.models import ARCHITECTURES

        raise UsageError(f"{source!r} is a state dict: give --arch (one of {', '.join(ARCHITECTURES)}) to build the "
                         f"network it belongs to")
    if kind != "state-dict" and arch is not None:
        raise UsageError(f"--arch {arch!r} is for state-dict files; {source!r} is a {kind} that builds its own network")
    if kind == "robustbench" and model_dir is None:
        raise UsageError(f"{source!r}: give --model-dir, the local RobustBench model directory holding "
                         f"{dataset}/{THREAT_MODEL}/{source.partition(':')[2]}.pt (cat-bench never downloads)")
    if kind != "robustbench" and model_dir is not None:
        raise UsageError(f"--model-dir {model_dir} is for robustbench:NAME sources, not for {source!r}")
    return dataset


# ---------------------------------------------------------------------------------------------
# Loaders: each returns (model, file hashed, how it was loaded)


def _state_dict(path: Path, arch: str, dataset: str):
    from cat_bench.models import build_classifier

    info = dataset_info(dataset)
    model = build_classifier(arch, info.num_classes, info.shape[0], info.mean, info.std)
    records.check_archive(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "f" in state and isinstance(state["f"], dict):
            state = state["f"]  # cat-bench's checkpoints and model folders: {"f": ..., "g": ...}
        model.load_state_dict(state)
    except Exception as err:  # not a state dict, or not this network's
        raise UsageError(f"{path} does not load into --arch {arch} for {dataset}: {type(err).__name__}: "
                         f"{_first_lines(str(err))}; for a network cat-bench does not build, give MODULE:FUNCTION "
                         f"returning your nn.Module with its weights loaded (docs/evaluation.md)") from None
    how = (f"torch.load(weights_only=True) into cat_bench.models.build_classifier({arch!r}) for {dataset}"
           f"{' (normalisation inside)' if info.mean else ''}")
    return model, path, how


def _first_lines(message: str, limit: int = 400) -> str:
    """A long message cut at a line or word boundary, never inside a word, saying how much was left out."""
    if len(message) <= limit:
        return message.strip()
    cut = message[:limit].rsplit("\n", 1)[0] if "\n" in message[:limit] else message[:limit].rsplit(" ", 1)[0]
    return f"{cut.strip()} ... ({len(message) - len(cut)} more characters)"


def _check_archive_pickles(path: Path) -> None:
    """Refuse a .pt2 archive holding a pickle that is not plain data. torch.export.load unpickles some
    members without restriction (data/sample_inputs/*.pt), so each member written by torch.save must
    first load with `weights_only=True` (tensors and containers only), and a bare pickle is refused."""
    import io
    import zipfile

    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise UsageError(f"{path} is not a torch.export program (.pt2, a zip archive): {err}") from None
    with archive:
        for member in archive.infolist():
            with archive.open(member) as fh:
                head = fh.read(4)
            if head.startswith(b"\x80"):  # a bare pickle (protocol 2 or later)
                raise UsageError(f"{path}: member {member.filename} is a bare pickle, which could run code when "
                                 f"loaded; cat-bench loads only archives whose pickles are plain data")
            if head == b"PK\x03\x04":  # a torch.save file inside the archive
                try:
                    torch.load(io.BytesIO(archive.read(member)), map_location="cpu", weights_only=True)
                except Exception as err:
                    raise UsageError(f"{path}: member {member.filename} holds a pickle that is not plain data "
                                     f"(torch.load(weights_only=True): {type(err).__name__}: {str(err)[:200]}); "
                                     f"loading it could run code, so the archive is refused") from None


def _torch_export(path: Path):
    records.check_archive(path)
    _check_archive_pickles(path)
    try:
        model = torch.export.load(str(path)).module()
    except Exception as err:
        raise UsageError(f"{path} is not a torch.export program torch {torch.__version__} loads: "
                         f"{type(err).__name__}: {str(err)[:300]}") from None
    return model, path, "torch.export.load(path).module()"


def _torchscript(path: Path):
    records.check_archive(path)
    try:
        model = torch.jit.load(str(path), map_location="cpu")
    except Exception as err:
        raise UsageError(f"{path} is not a TorchScript file torch {torch.__version__} loads: "
                         f"{type(err).__name__}: {str(err)[:300]}") from None
    return model, path, "torch.jit.load(path)"


def _robustbench(name: str, dataset: str, model_dir: Path):
    from cat_bench import robustbench_compat as compat

    if not compat.available():
        raise UsageError("robustbench:NAME needs the robustbench extra: pip install 'cat-bench[robustbench]'")
    path = Path(model_dir) / dataset / THREAT_MODEL / f"{name}.pt"
    if not path.is_file():
        raise UsageError(f"robustbench:{name}: no checkpoint {path}; put RobustBench's {name}.pt there "
                         f"(cat-bench never downloads)")
    rb = compat.import_robustbench()
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel
    from robustbench.model_zoo.models import model_dicts

    zoo = model_dicts[BenchmarkDataset(dataset)][ThreatModel(THREAT_MODEL)]
    if name not in zoo:
        raise UsageError(f"robustbench:{name}: RobustBench's {dataset}/{THREAT_MODEL} model zoo has no such model; "
                         f"e.g. {', '.join(list(zoo)[:5])}")
    records.check_archive(path)
    try:  # robustbench's load_model calls torch.load without weights_only: plain data only gets that far
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UsageError(f"robustbench:{name}: {path} is not a plain checkpoint (torch.load(weights_only=True): "
                         f"{type(err).__name__}: {str(err)[:200]}); a pickle in it could run code when loaded, so "
                         f"cat-bench loads only tensors and containers") from None
    with compat.no_downloads():
        model = rb.utils.load_model(name, model_dir=str(model_dir), dataset=dataset, threat_model=THREAT_MODEL)
    return model, path, f"robustbench.utils.load_model({name!r}, model_dir, {dataset!r}, {THREAT_MODEL!r})"


def _entry_point(source: str):
    module_name, _, function = source.partition(":")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise UsageError(f"{source!r}: cannot import module {module_name!r} ({err})") from None
    fn = getattr(module, function, None)
    if not callable(fn):
        raise UsageError(f"{source!r}: module {module_name!r} has no function {function!r}")
    model = fn()
    if not isinstance(model, torch.nn.Module):
        raise UsageError(f"{source!r} returned a {type(model).__name__}, not a torch.nn.Module")
    origin = getattr(module, "__file__", None)
    if origin is None:
        raise UsageError(f"{source!r}: module {module_name!r} has no source file to hash")
    return model, Path(origin), f"{module_name}.{function}() (the SHA-256 is of {Path(origin).name})"


def load(source: str, kind: str, *, arch: str | None, dataset: str, model_dir=None):
    """(model in eval mode on the CPU, the file whose SHA-256 identifies it, how it was loaded)."""
    if kind == "state-dict":
        model, path, how = _state_dict(Path(source), arch, dataset)
    elif kind == "torch-export":
        model, path, how = _torch_export(Path(source))
    elif kind == "torchscript":
        model, path, how = _torchscript(Path(source))
    elif kind == "robustbench":
        model, path, how = _robustbench(source.partition(":")[2], dataset, model_dir)
    else:
        model, path, how = _entry_point(source)
    try:
        model.eval()
    except (NotImplementedError, RuntimeError):  # a torch.export module refuses .eval(): it is already traced as such
        pass
    return model, path, how


# ---------------------------------------------------------------------------------------------
# The external run directory


def weights_sha256(model) -> str:
    """SHA-256 of what the model computes with: every parameter and buffer as loaded (name, dtype, shape
    and bytes, in `state_dict` order). The file's SHA-256 alone misses weights a `module:function`
    loads from elsewhere, or a program that reads its weights at load time."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def identity(source: str, kind: str, digest: str, weights: str, arch: str | None, dataset: str, seed: int,
             protocol: str = "valid") -> dict:
    """The external run's identity: what results tables group on, and what its directory name hashes:
    the file (`digest`: its SHA-256, the program or source) and what it loads (`weights`). `protocol`:
    "valid" (attacks stay in [0, 1], RobustBench's convention) but for a model folder, whose card says."""
    return {"method": "external", "dataset": dataset, "arch": arch or kind, "eps": dataset_info(dataset).test_eps,
            "seed": seed, "protocol": protocol, "n_train": 0, "hparams": {},
            "schedule": {"name": "external", "epochs": 0},
            "external": {"source": source, "kind": kind, "sha256": digest, "weights_sha256": weights,
                         "label": label(source, kind)}}


def label(source: str, kind: str) -> str:
    """A short name for tables: the file's name, RobustBench's model name, or the entry point."""
    if kind == "robustbench":
        return source.partition(":")[2]
    return source if kind in ("entry-point", "model-folder") else Path(source).name


def prepare(results: Path, source: str, kind: str, model, path: Path, how: str, *, weights: str,
            arch: str | None, dataset: str, seed: int, protocol: str = "valid") -> Path:
    """Create (or find) the external run directory of this model (its file and its weights, `weights`:
    `weights_sha256` as loaded); returns it."""
    from cat_bench.shipped import sha256

    digest = sha256(path)
    ident = identity(source, kind, digest, weights, arch, dataset, seed, protocol)
    run_dir = Path(results) / FOLDER / records.run_name(ident)
    info = {"format": FORMAT, "source": source, "kind": kind, "file": str(Path(path).resolve()), "sha256": digest,
            "weights_sha256": weights, "how": how,
            "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
            "parameters": sum(p.numel() for p in model.parameters())}
    if (run_dir / INFO).is_file():
        stored = records.read_json(run_dir / INFO)
        if (stored.get("sha256"), stored.get("weights_sha256")) != (digest, weights):
            raise CorruptRecord(f"{run_dir / INFO} records SHA-256 {stored.get('sha256')} and weights "
                                f"{stored.get('weights_sha256')}, not {digest} and {weights}; move {run_dir} aside "
                                f"and evaluate again")
        return run_dir
    records.write_json(run_dir / INFO, info)
    records.write_json(run_dir / records.CONFIG, {"identity": ident, "external": info})
    records.write_json(run_dir / records.DONE, {"best_epoch": 0, "external": True})
    return run_dir


def evaluate_external(source: str, attacks: str, *, arch: str | None = None, dataset: str | None = None,
                      model_dir=None, results=Path("results"), seed: int = 0, n_examples: int | None = None,
                      eps: float | None = None, batch_size: int | None = None, data_root=None, device=None,
                      progress: bool = True, log=print, strict: bool = False) -> tuple[Path, dict]:
    """Load SOURCE, make its external run directory and evaluate it there: (run directory, eval.json's content)."""
    from cat_bench.evaluate import attack_all, check_options as check_eval, default_batch_size, load_test_examples
    from cat_bench.evaluate import parse_attacks, setup_checks
    from cat_bench.networks import precision_context, resolve_device
    from cat_bench.rundir import RunLock, check_writable

    kind = kind_of(source)
    dataset = check_options(kind, source, arch=arch, dataset=dataset, model_dir=model_dir)
    info = dataset_info(dataset)
    names = parse_attacks(attacks, info.family)
    check_eval(batch_size=batch_size, n_examples=n_examples, eps=eps)
    check_writable(Path(results) / FOLDER, "results directory")  # made by `prepare`, once the model loads
    device = resolve_device(device)
    precision_context("fp32", device)
    batch_size = batch_size or default_batch_size(device)
    model, path, how = load(source, kind, arch=arch, dataset=dataset, model_dir=model_dir)
    weights = weights_sha256(model)
    model = model.to(device)
    x, y = load_test_examples(dataset, n_examples, data_root, device)
    checks = setup_checks(model, x, y, family=info.family, clip=True, strict=strict, where=source, log=log)
    run_dir = prepare(results, source, kind, model, path, how, weights=weights, arch=arch, dataset=dataset,
                      seed=seed)
    digest = records.read_json(run_dir / INFO)["sha256"]
    log(f"{source}: {kind}, SHA-256 {digest}, weights {weights[:12]}, loaded by {how}; run directory {run_dir}")
    test_eps = eps if eps is not None else info.test_eps
    key = {"checkpoint": INFO, "sha256": digest, "weights_sha256": weights, "n_examples": len(y), "eps": test_eps}
    with RunLock(run_dir):
        result = attack_all(run_dir, model, x, y, names, key=key, dataset=dataset, seed=seed, clip=True,
                            eps_override=eps is not None, batch_size=batch_size, device=device, progress=progress,
                            log=log, checks=checks)
    return run_dir, result


def evaluate_folder(folder: Path, card: dict, names: list[str], *, results=Path("results"),
                    n_examples: int | None = None, eps: float | None = None, batch_size: int, device,
                    data_root=None, progress: bool = True, log=print, strict: bool = False) -> tuple[Path, dict, str]:
    """Evaluate a model folder's f (`cat-bench export`; its weights verified by the caller) in its external
    run directory under RESULTS/external, leaving the folder untouched: (run directory, eval.json's
    content, which examples: `shipped.check_examples`). The same checks, attacks, seeding (the card's
    seed) and protocol (the card's: the MNIST paper protocol stays unclipped) as the run it was
    exported from; the examples are the folder's own check examples when they suffice and no
    `data_root` is given (the same first test examples). Its identity: the card's name and dataset,
    network and protocol, the weights file's SHA-256 and the weights as loaded."""
    from cat_bench.evaluate import attack_all, setup_checks
    from cat_bench.networks import precision_context
    from cat_bench.presets import clips
    from cat_bench.rundir import RunLock, check_writable
    from cat_bench.shipped import check_examples, load_networks

    ident = card["identity"]
    info = dataset_info(ident["dataset"])
    check_writable(Path(results) / FOLDER, "results directory")
    precision_context("fp32", device)  # the paper's evaluation: fp32, TF32 off
    model = load_networks(folder, card, device).f
    weights = weights_sha256(model)
    x, y, examples = check_examples(folder, card, n_examples, device, data_root)
    clip = clips(info.family, ident["protocol"])
    checks = setup_checks(model, x, y, family=info.family, clip=clip, strict=strict, where=folder, log=log)
    path = Path(folder) / card["weights"]["file"]
    run_dir = prepare(results, card["name"], "model-folder", model, path, f"cat-bench model folder {folder}",
                      weights=weights, arch=ident["arch"], dataset=ident["dataset"], seed=ident["seed"],
                      protocol=ident["protocol"])
    log(f"{folder}: model folder {card['name']}, weights {weights[:12]}; run directory {run_dir}")
    test_eps = eps if eps is not None else info.test_eps
    key = {"checkpoint": INFO, "sha256": card["weights"]["sha256"], "weights_sha256": weights,
           "n_examples": len(y), "eps": test_eps}
    with RunLock(run_dir):
        result = attack_all(run_dir, model, x, y, names, key=key, dataset=ident["dataset"], seed=ident["seed"],
                            clip=clip, eps_override=eps is not None, batch_size=batch_size, device=device,
                            progress=progress, log=log, checks=checks)
    return run_dir, result, examples


def folder_run(results: Path, card: dict) -> Path | None:
    """The external run directory under RESULTS/external in which a model folder (its card) was evaluated,
    or None."""
    for run_dir in external_runs(results, [card["identity"]["dataset"]]):
        loaded = records.read_identity(run_dir).get("external", {})
        if loaded.get("kind") == "model-folder" and loaded.get("sha256") == card["weights"]["sha256"] \
                and loaded.get("source") == card["name"]:
            return run_dir
    return None


def external_runs(results: Path, datasets=None) -> list[Path]:
    """The external run directories under RESULTS/external (of these datasets), sorted by name."""
    folder = Path(results) / FOLDER
    if not folder.is_dir():
        return []
    out = []
    for run_dir in sorted(p for p in folder.iterdir() if (p / INFO).is_file() and (p / records.CONFIG).is_file()):
        if datasets is None or records.read_identity(run_dir)["dataset"] in datasets:
            out.append(run_dir)
    return out
