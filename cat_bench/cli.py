"""The `cat-bench` command line: train, eval, compare, export, run, status, results, report, submit, list.

Every user mistake (unknown name, eps outside (0, 1], bad `--set`, missing or corrupt checkpoint)
ends with a message naming the bad value and what is allowed, and exit status 2.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from cat_bench import distributed
from cat_bench.errors import CorruptRecord, Diverged, GroupFailed, UsageError
from cat_bench.eval_attacks import attack_order
from cat_bench.options import RUN_OPTIONS, add_flags, schema
from cat_bench.presets import parse_eps
from cat_bench.settings import SLURM_OPTIONS, Settings, parse_sbatch, slurm_resources
from cat_bench.shell import command
from cat_bench.tracking import check_trackers

LISTABLE = ("methods", "datasets", "attacks", "architectures", "options")


def parse_sets(items: list[str]) -> dict[str, str]:
    """`--set beta=1 b=0.3` into {"beta": "1", "b": "0.3"}."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise UsageError(f"--set {item!r} is not KEY=VALUE (e.g. --set beta=5 b=0.05)")
        out[key] = value
    return out


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1 (argparse names the flag and exits 2 otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive integer")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cat-bench", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train one method on one dataset (docs/method.md s3 protocol)")
    t.add_argument("--method", required=True, help="see `cat-bench list methods`")
    t.add_argument("--dataset", required=True, help="mnist, mnist-mini, cifar10, cifar100")
    t.add_argument("--eps", required=True, help="training eps in [0,1] pixels, e.g. 0.3 or 8/255")
    t.add_argument("--seed", type=int, default=0, help="seeds torch and the batch order (default 0)")
    add_flags(t)  # the run options (cat_bench.options): every one part of the run's identity
    t.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="method hyperparameters, e.g. beta=5 b=0.05")
    t.add_argument("--out", type=Path, help="run directory (default: runs/METHOD-DATASET-HASH)")
    t.add_argument("--resume", action="store_true", help="continue from the run directory's last checkpoint")
    t.add_argument("--stop-after-epoch", type=positive_int, metavar="K",
                   help="train at most up to epoch K this time (a compute budget, not part of the run's identity; "
                        "--resume continues)")
    _budget_args(t)
    _kernel_args(t)
    _log_arg(t)
    t.add_argument("--nproc", type=positive_int, default=1,
                   help="data-parallel processes for this one run (one per GPU on CUDA, gloo on CPU); the global "
                        "batch stays the protocol's (default 1; under torchrun, its WORLD_SIZE)")
    _common(t)

    e = sub.add_parser("eval", help="evaluate a trained run, a shipped model folder or any model under the paper's "
                                    "attacks (docs/method.md s4)")
    e.add_argument("run_dir", type=Path, metavar="SOURCE",
                   help="a run directory (cat-bench train --out, or RESULTS/runs/NAME; writes its eval.json), a model "
                        "folder (cat-bench export; its SHA-256 is verified, the numbers are printed beside its card's and "
                        "kept in RESULTS/external/NAME, the folder is written only with --record), or an external model "
                        "evaluated into RESULTS/external/NAME: a state-dict "
                        "file with --arch and --dataset, a torch.export .pt2 or TorchScript file, robustbench:NAME "
                        "with --model-dir, or module:function returning an nn.Module (docs/evaluation.md)")
    e.add_argument("--attacks", default="natural,fgsm,pgd20,pgd100,cw",
                   help=f"comma-separated: {','.join(attack_order())} (`cat-bench list attacks`)")
    e.add_argument("--n-examples", type=int, help="first N test examples (default: the full test set)")
    e.add_argument("--eps", help="override the dataset's test eps (0.3 MNIST, 8/255 CIFAR)")
    e.add_argument("--batch-size", type=int, help="default: 500 on CUDA, 100 on CPU")
    e.add_argument("--unfinished", action="store_true",
                   help="evaluate a run whose training has not finished (its best checkpoint so far)")
    e.add_argument("--arch", help="external state-dict files: the network the weights belong to")
    e.add_argument("--dataset", help="external models: the dataset to evaluate on (robustbench:NAME: default cifar10)")
    e.add_argument("--model-dir", type=Path, help="robustbench:NAME: the local RobustBench model directory")
    e.add_argument("--results", type=Path, default=Path("results"),
                   help="model folders and external models: the results directory whose external/ gets the run "
                        "(default: ./results)")
    e.add_argument("--seed", type=int, default=0, help="external models: the seed torch gets before each attack")
    e.add_argument("--record", action="store_true",
                   help="model folders: also add this evaluation to the card (card.json and README.md, beside the "
                        "export's)")
    e.add_argument("--strict", action="store_true",
                   help="a failed setup check (eval mode, eps 0, input range, finite gradients) is an error "
                        "(exit 2) instead of a recorded flag and a warning")
    _common(e)

    c = sub.add_parser("compare", help="is the accuracy difference between two evaluated runs real? paired "
                                       "bootstrap interval and McNemar's exact test, per attack")
    c.add_argument("run_a", type=Path, help="an evaluated run directory (with per-example records) or a model folder "
                                            "evaluated with cat-bench eval")
    c.add_argument("run_b", type=Path, help="another, evaluated on the same test examples at the same eps")
    c.add_argument("--attacks", help="comma-separated attacks to compare (default: every attack both runs have)")
    c.add_argument("--n-boot", type=positive_int, default=10_000, help="bootstrap resamples (default 10000)")
    c.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    c.add_argument("--json", action="store_true", help="print the numbers as JSON")
    c.add_argument("--results", type=Path, default=Path("results"),
                   help="where a model folder's evaluation is found (RESULTS/external, as `cat-bench eval FOLDER` "
                        "writes it; default: ./results)")
    c.add_argument("--allow-different", action="store_true",
                   help="compare runs measured under different threat models (clip, protocol, attack settings) "
                        "anyway, printing what differs; without it they are refused")

    x = sub.add_parser("export", help="ship a finished, evaluated run's selected model: weights, SHA-256 and model "
                                      "card in one folder")
    x.add_argument("run_dir", type=Path, help="a finished run directory evaluated with cat-bench eval")
    x.add_argument("--name", required=True, help="the model's name, e.g. at-mnist-eps0.3 (letters, digits, . _ -)")
    x.add_argument("--out", type=Path, help="model folder (default: results/models/NAME); must not exist")
    x.add_argument("--trained-with", metavar="COMMAND",
                   help="the command that trained the run, as given (e.g. its suite's cat-bench run ...), for the card")
    x.add_argument("--batch-size", type=int, help="the check's batch size (default: 500 on CUDA, 100 on CPU)")
    _common(x)

    r = sub.add_parser("run", help="train and evaluate every run of a suite, skipping finished ones")
    _suite_args(r)
    r.add_argument("--dry-run", action="store_true", help="print the plan (runs, done, GPU-hour estimate) and stop")
    r.add_argument("--retrain", nargs="+", default=[], metavar="RUN",
                   help="start these runs of the suite again from scratch (each directory is moved aside to "
                        "RUN.old-TIMESTAMP, not deleted)")
    r.add_argument("--stop-after-epoch", type=positive_int, metavar="K",
                   help="train each run at most up to epoch K this time (a compute budget; rerun to continue)")
    _budget_args(r)
    _kernel_args(r)
    _log_arg(r)
    r.add_argument("--jobs-per-gpu", type=positive_int, default=1, metavar="K",
                   help="local: K runs at once on each GPU (K worker processes per GPU, each run under its own "
                        "lock; small networks leave a big GPU idle), or K worker processes on CPU (default 1)")
    r.add_argument("--price-on", default="h100", metavar="KIND",
                   help="--dry-run: the device kind whose measured rates price the plan: h100 (default), h200 or cpu "
                        "(cat_bench/costs.py); a network not measured there is priced at its nearest measured one's")
    r.add_argument("--gpu-tflops", type=positive_float,
                   help="--dry-run: a fixed sustained TFLOP/s for the networks not measured on --price-on")
    r.add_argument("--throughput", nargs="+", type=Path, default=[], metavar="FILE",
                   help="benchmarks/throughput.py --record files: --dry-run prices each network they measured at "
                        "its measured rate (default: RESULTS/throughput-*.json, where scripts/gpu_hour.sh puts them)")
    r.add_argument("--executor", choices=("local", "slurm"), default="local",
                   help="local: here, one process per visible GPU; slurm: one job-array task per run (submitit), "
                        "each named after its run")
    r.add_argument("--gpus-per-job", type=positive_int, default=1,
                   help="processes per run (default 1); above 1 each run trains as one data-parallel group: "
                        "local, one run at a time on that many GPUs (gloo processes on CPU); slurm, one task per GPU "
                        "(CPU ranks on a partition without GPUs)")
    for option in SLURM_OPTIONS:  # also a suite's [slurm] keys (cat_bench/settings.py)
        option.add_to(r)
    r.add_argument("--slurm", nargs="+", action="extend", default=[], metavar="KEY[=VALUE]",
                   help="any other sbatch option for every job, passed through: account=lab qos=high "
                        "constraint=a100 gres=gpu:a100:1 exclusive (also a suite's [slurm.sbatch] table; the "
                        "command line wins per key)")
    _common(r)

    st = sub.add_parser("status", help="progress of a suite's runs")
    _suite_args(st)

    res = sub.add_parser("results", help="table of the finished runs of a suite (or of every run in --results), "
                                         "grouped over seeds")
    _suite_args(res, required=False)
    res.add_argument("--format", default="markdown", help="csv, markdown or json")
    res.add_argument("--per-seed", action="store_true", help="one row per run instead of mean and std over seeds")
    res.add_argument("--wide", action="store_true",
                     help="every column: all config and hyperparameter columns, mean and std as separate columns")

    rp = sub.add_parser("report", help="render the HTML report of a suite (or of every run in --results): "
                                       "leaderboard, runs, the paper's tables and figures they fill")
    _suite_args(rp, required=False)
    rp.add_argument("--out", type=Path, help="report folder (default: RESULTS/reports/SUITE beside the records; "
                                             "without --suite, RESULTS/report)")
    rp.add_argument("--models", type=Path, default=Path("results/models"),
                    help="model folders (cat-bench export) that Figure 2 draws from when a run's checkpoint is not "
                         "on disk (default: results/models)")
    _common(rp)

    sb = sub.add_parser("submit", help="export a finished, AutoAttack-evaluated run in RobustBench's format")
    sb.add_argument("run_dir", type=Path, help="a finished run directory evaluated with autoattack")
    sb.add_argument("--name", required=True, help="RobustBench model name, e.g. Huang2021Calibrated_PRN18")
    sb.add_argument("--title", help="paper title (model_info's `name`; default: the CAT paper for CAT runs)")
    sb.add_argument("--authors", help="paper authors, comma-separated (default: the CAT paper's for CAT runs)")
    sb.add_argument("--venue", help="e.g. 'ACML 2021' (default: the CAT paper's for CAT runs)")
    sb.add_argument("--link", help="paper URL (default: the CAT paper's for CAT runs)")
    sb.add_argument("--reported", help="robust accuracy the paper reports, percent (default: none)")
    sb.add_argument("--footnote", help="text for model_info's footnote")
    sb.add_argument("--n-examples", type=int,
                    help="accept an AutoAttack evaluation on this many test points instead of the full test set")
    sb.add_argument("--gdrive-id", help="Google Drive id of the uploaded checkpoint, for the model-zoo entry")
    sb.add_argument("--out", type=Path, help="submission folder (default: submissions/NAME)")
    sb.add_argument("--verify", action="store_true",
                    help="load the export with RobustBench's load_model and run its benchmark (robustbench extra)")
    sb.add_argument("--verify-n", type=int, default=100, help="test points for --verify's benchmark (default 100)")
    sb.add_argument("--batch-size", type=int, help="--verify's batch size (default: 500 on CUDA, 100 on CPU)")
    _common(sb)

    dr = sub.add_parser("doctor", help="self-check every device-specific branch on one device; exit 1 on a failure")
    dr.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    dr.add_argument("--only", nargs="+", metavar="TEXT", help="run the checks whose name contains TEXT")
    dr.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON to FILE")
    dr.add_argument("--keep", type=Path, metavar="DIR",
                    help="work in DIR (an empty or new folder) and keep what the checks wrote there")

    li = sub.add_parser("list", help="list methods, datasets, attacks, architectures or run options")
    li.add_argument("what", choices=LISTABLE, help="what to list")
    return p


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


CONFIRM_CPU_HOURS = 24  # CPU training estimated above this many hours, with no budget, starts only with --yes


def _budget_args(p: argparse.ArgumentParser) -> None:
    """`--stop-after-minutes`, the wall-clock budget of train and run, and `--yes` for a long CPU plan."""
    p.add_argument("--stop-after-minutes", type=positive_float, metavar="M",
                   help="a wall-clock budget: stop at the first epoch boundary after M minutes, with that epoch "
                        "checkpointed (not part of any run's identity; the same command continues)")
    p.add_argument("--yes", action="store_true",
                   help=f"start new CPU training estimated at more than {CONFIRM_CPU_HOURS} hours without a budget")


def _confirm_cpu_hours(args, configs: list[dict], device) -> None:
    """UsageError before new CPU training that the cost model (cat_bench/costs.py, this CPU's measured rate)
    puts above CONFIRM_CPU_HOURS, unless `--yes` or a budget (--stop-after-minutes / --stop-after-epoch)."""
    from cat_bench.costs import Pricer, run_gpu_hours

    if device.type != "cpu" or args.yes or args.stop_after_minutes or args.stop_after_epoch or not configs:
        return
    pricer = Pricer("cpu")
    hours = sum(run_gpu_hours(c, (), None, tflops=pricer.rate(c).tflops) for c in configs)
    if hours > CONFIRM_CPU_HOURS:
        raise UsageError(f"this would train {len(configs)} new run(s) for about {hours:.0f} hours on this CPU "
                         f"(cat_bench/costs.py), over the {CONFIRM_CPU_HOURS} hours cat-bench starts unasked; pass "
                         f"--yes to start anyway, give a budget (--stop-after-minutes M or --stop-after-epoch N; "
                         f"the same command continues), train fewer images or epochs (--n-train, --epochs), or use "
                         f"a GPU (--device cuda)")


def _log_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log", nargs="+", default=[], metavar="TRACKER",
                   help="also write training curves for TRACKER: tensorboard (RUN_DIR/tensorboard; the tensorboard "
                        "extra) or wandb (one W&B run per run directory; WANDB_MODE=offline keeps it local); not "
                        "part of the run's identity")


def _kernel_args(p: argparse.ArgumentParser) -> None:
    from cat_bench.presets import COMPILE_MODES

    p.add_argument("--compile", nargs="?", const="default", choices=COMPILE_MODES, metavar="MODE",
                   help="torch.compile the classifier, in MODE: " + ", ".join(COMPILE_MODES)
                        + " (default when the flag is given alone; reduce-overhead replays CUDA graphs, for "
                          "launch-bound small networks); a speed option, not part of the run's identity")
    p.add_argument("--deterministic", action="store_true",
                   help="on CUDA, deterministic kernels (cuDNN without benchmarking, torch's deterministic "
                        "algorithms): a resumed run then equals an uninterrupted one there, at some speed; CPU runs "
                        "are deterministic already. Not part of the run's identity")


def _suite_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--suite", required=required,
                   help="smoke, mnist, cifar10-preact, cifar10-wrn, cifar100, paper, or a TOML file"
                        + ("" if required else "; without it, every run directory in --results"))
    p.add_argument("--results", type=Path, default=Path("results"), help="results directory (default: ./results)")
    p.add_argument("--only", nargs="+", default=[], metavar="KEY=VALUE", help="e.g. method=at eps=8/255 seed=0")


def _suite_specs(args):
    """The suite (or, without --suite, every run directory in --results) and its runs after --only."""
    from cat_bench.suite import filter_runs, folder_suite, load_suite

    _check_results(args.results)
    if args.suite is None:
        if not args.results.is_dir():
            raise UsageError(f"--results {args.results}: no such folder; give the folder that holds your runs "
                             f"(`cat-bench run --results DIR` or `cat-bench train --out DIR/NAME`)")
        suite, skipped = folder_suite(args.results)
        for reason in skipped:
            print(f"skipped {reason}", file=sys.stderr)
    else:
        suite = load_suite(args.suite)
    return suite, filter_runs(suite.runs, args.only, require_match=True)


def _scope(args) -> list[str]:
    """How printed commands name what was asked for: the suite (or nothing) and the results folder."""
    return (["--suite", args.suite] if args.suite else []) + ["--results", str(args.results)]


def _check_results(results: Path) -> None:
    if results.exists() and not results.is_dir():
        raise UsageError(f"--results {results} is a file, not a results directory")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", help="dataset root (default: $CAT_BENCH_DATA, else a user cache dir)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _settings(args, suite_log: tuple[str, ...] = ()) -> Settings:
    """The invocation's settings (cat_bench.settings), built once from the command line (and the suite's
    `log` trackers, which --log replaces); every executor gets them whole."""
    return Settings(device=args.device, data_root=args.data_root, compile=args.compile,
                    deterministic=args.deterministic, trackers=tuple(check_trackers(args.log or list(suite_log))),
                    progress=not args.no_progress, stop_after_epoch=args.stop_after_epoch,
                    stop_after_minutes=args.stop_after_minutes)


def _train(args) -> None:
    from cat_bench import records
    from cat_bench.config import resolve_config
    from cat_bench.train import train, train_group

    config = resolve_config(args.method, args.dataset, parse_eps(args.eps), seed=args.seed,
                            overrides=parse_sets(args.set), **{o.name: getattr(args, o.name) for o in RUN_OPTIONS})
    out = args.out or Path("runs") / records.run_name(config)
    if args.n_train is not None and config["n_train"] != args.n_train:
        print(f"note: --n-train {args.n_train} is more than the {config['n_train']} training images {args.dataset} "
              f"has here; training on (and recording) {config['n_train']}", file=sys.stderr)
    settings = _settings(args)
    main_rank = distributed.from_env().main  # False on the other ranks torchrun starts
    if not (out / records.CONFIG).is_file():  # a new run (train itself checks the folder of an earlier one)
        from cat_bench.networks import resolve_device

        _confirm_cpu_hours(args, [config], resolve_device(args.device))
    if main_rank:
        print(f"run directory: {out}", file=sys.stderr)
        if args.resume and not (out / records.LAST).is_file() and not (out / records.DONE).is_file():
            print(f"note: --resume: {out} holds no checkpoint ({records.LAST}); training starts at epoch 1",
                  file=sys.stderr)
    if args.nproc > 1:
        summary = train_group(config, out, args.nproc, settings, resume=args.resume)
    else:
        summary = train(config, out, settings, resume=args.resume, log=lambda m: print(m, file=sys.stderr))
    if not main_rank:
        return
    if not summary.get("done", True):
        print(f"stopped after epoch {summary['epochs_trained']} of {summary['epochs']}; continue with: "
              f"{command('train', '...', '--resume', '--out', out)}")
        return
    print(f"done: selected epoch {summary['best_epoch']} (rule {summary['selection']}); "
          f"evaluate with: {command('eval', out)}")


def _eval(args) -> None:
    from cat_bench.evaluate import evaluate
    from cat_bench.shipped import is_model_folder

    from cat_bench.external import SOURCES, is_external

    if is_external(str(args.run_dir)):
        return _eval_external(args)
    if not args.run_dir.exists():
        raise UsageError(f"{args.run_dir} is not a run directory (nothing is there); cat-bench eval takes {SOURCES}")
    given = [f"--{k.replace('_', '-')}" for k in ("arch", "dataset", "model_dir") if getattr(args, k) is not None]
    if given:
        raise UsageError(f"{' '.join(given)}: for external models only; {args.run_dir} is a run directory or "
                         f"model folder, which knows its network and dataset")
    if is_model_folder(args.run_dir):
        return _eval_model_folder(args)
    if args.record:
        raise UsageError(f"--record is for model folders; {args.run_dir} is a run directory, whose evaluation "
                         f"always goes to its eval.json")
    eps = parse_eps(args.eps) if args.eps is not None else None
    result = evaluate(args.run_dir, args.attacks, n_examples=args.n_examples, eps=eps, batch_size=args.batch_size,
                      data_root=args.data_root, device=args.device, progress=not args.no_progress,
                      log=lambda m: print(m, file=sys.stderr), unfinished=args.unfinished, strict=args.strict)
    _print_evaluation(result, args.run_dir)


def _print_evaluation(result: dict, run_dir: Path) -> None:
    """Each attack's accuracy, the worst case over them, and the setup checks that did not pass."""
    from cat_bench.checks import as_flags

    rows = {name: entry["accuracy"] for name, entry in result["attacks"].items()}
    if "worst-case" in result:
        rows["worst-case"] = result["worst-case"]["accuracy"]
    width = max(map(len, rows))
    for name, accuracy in rows.items():
        print(f"{name:<{width}}  {100 * accuracy:6.2f}%")
    for flag in as_flags(result.get("checks", [])):
        print(f"flag: {flag['flag']}: {flag['detail']}")
    print(f"record: {run_dir / 'eval.json'}")


def _eval_external(args) -> None:
    """`cat-bench eval SOURCE` for a model cat-bench did not train: an external run directory (cat_bench.external)."""
    from cat_bench.external import evaluate_external

    if args.unfinished:
        raise UsageError(f"--unfinished is for run directories; {args.run_dir} is an external model")
    eps = parse_eps(args.eps) if args.eps is not None else None
    _check_results(args.results)
    run_dir, result = evaluate_external(
        str(args.run_dir), args.attacks, arch=args.arch, dataset=args.dataset, model_dir=args.model_dir,
        results=args.results, seed=args.seed, n_examples=args.n_examples, eps=eps, batch_size=args.batch_size,
        data_root=args.data_root, device=args.device, progress=not args.no_progress,
        log=lambda m: print(m, file=sys.stderr), strict=args.strict)
    _print_evaluation(result, run_dir)


def _eval_model_folder(args) -> None:
    """`cat-bench eval MODEL_FOLDER`: verify the weights' SHA-256, evaluate into RESULTS/external (the folder
    stays as it is), print beside the card's numbers; with --record, also add the evaluation to the card."""
    from cat_bench.data import dataset_info
    from cat_bench.evaluate import check_options, default_batch_size, parse_attacks
    from cat_bench.external import evaluate_folder
    from cat_bench.networks import resolve_device
    from cat_bench.shipped import card_entry, read_card, verify_weights

    if args.unfinished:
        raise UsageError(f"--unfinished is for run directories; {args.run_dir} is a model folder of a finished run")
    card = read_card(args.run_dir)
    info = dataset_info(card["identity"]["dataset"])
    names = parse_attacks(args.attacks, info.family)
    eps = parse_eps(args.eps) if args.eps is not None else None
    check_options(batch_size=args.batch_size, n_examples=args.n_examples, eps=eps)
    _check_results(args.results)
    digest = verify_weights(args.run_dir, card)
    print(f"{card['weights']['file']}: SHA-256 verified ({digest})", file=sys.stderr)
    device = resolve_device(args.device)
    batch_size = args.batch_size or card.get("check", {}).get("batch_size") or default_batch_size(device)
    run_dir, result, examples = evaluate_folder(
        args.run_dir, card, names, results=args.results, n_examples=args.n_examples, eps=eps, batch_size=batch_size,
        device=device, data_root=args.data_root, progress=not args.no_progress,
        log=lambda m: print(m, file=sys.stderr), strict=args.strict)
    _print_beside_card(card, result, names, examples)
    print(f"record: {run_dir / 'eval.json'}")
    if args.record:
        _record_in_card(args, card, card_entry(run_dir, result, names, examples), device, batch_size)


def _print_beside_card(card: dict, result: dict, names: list[str], examples: str) -> None:
    """Each attack's accuracy measured now beside the card's for the same examples and eps, and the flags."""
    from cat_bench.checks import as_flags
    from cat_bench.shipped import card_numbers

    n, test_eps = result["key"]["n_examples"], result["key"]["eps"]
    recorded = card_numbers(card, n, test_eps)
    width = max(map(len, names))
    print(f"{card['name']}: {n} test examples ({examples}), eps {test_eps:g}; measured here, then the card's number "
          f"for the same examples")
    for name in names:
        mine = 100 * result["attacks"][name]["accuracy"]
        if name in recorded:
            theirs = 100 * recorded[name]
            same = "same" if abs(mine - theirs) < 1e-9 else f"differs by {mine - theirs:+.2f}"
            print(f"{name:<{width}}  {mine:6.2f}%  card {theirs:6.2f}%  {same}")
        else:
            print(f"{name:<{width}}  {mine:6.2f}%  card has no number for these examples")
    for flag in as_flags(result.get("checks", [])):
        print(f"flag: {flag['flag']}: {flag['detail']}")


def _record_in_card(args, card: dict, entry: dict, device, batch_size: int) -> None:
    """`eval FOLDER --record`: the evaluation just made (`shipped.card_entry`) added to the card."""
    from cat_bench.shipped import record_evaluation

    n = entry["key"]["n_examples"]
    how = command("eval", str(args.run_dir), "--attacks", ",".join(entry["attacks"]),
                  *(["--n-examples", str(n)] if args.n_examples else []),
                  *(["--eps", args.eps] if args.eps is not None else []), "--record")
    recorded = record_evaluation(args.run_dir, card, entry, device=device, batch_size=batch_size, command=how)
    for flag in recorded["flags"]:
        print(f"flag: {flag['flag']}: {flag['detail']}")
    print(f"recorded in {args.run_dir / 'card.json'} and README.md", file=sys.stderr)


def _compare(args) -> None:
    import json

    from cat_bench.compare import compare_runs, format_comparison

    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()] if args.attacks is not None else None
    if attacks is not None and not attacks:
        raise UsageError(f"--attacks {args.attacks!r} names no attack; give e.g. --attacks natural,pgd20")
    run_a, run_b = _evaluated(args.run_a, args.results), _evaluated(args.run_b, args.results)
    result = compare_runs(run_a, run_b, attacks, n_boot=args.n_boot, seed=args.seed,
                          allow_different=args.allow_different)
    print(json.dumps(result, indent=2) if args.json else format_comparison(result, bold=sys.stdout.isatty()),
          end="\n" if args.json else "")


def _evaluated(path: Path, results: Path) -> Path:
    """One side of `compare`: a run directory as given; for a model folder, the run directory of its
    evaluation under RESULTS/external (`cat-bench eval FOLDER` makes it; the folder holds no per-example records)."""
    from cat_bench.external import folder_run
    from cat_bench.shipped import is_model_folder, read_card

    if not is_model_folder(path):
        return path
    found = folder_run(results, read_card(path))
    if found is None:
        raise UsageError(f"{path} is a model folder not yet evaluated into {results}; evaluate it with "
                         f"{command('eval', path, '--results', results, '--n-examples', 'N')} (N: the other "
                         f"side's examples), then compare again")
    return found


def _export(args) -> None:
    from cat_bench.shipped import check_folder_name, export_model

    check_folder_name(args.name)
    out = export_model(args.run_dir, args.name, args.out, trained_with=args.trained_with, device=args.device,
                 batch_size=args.batch_size,
                 data_root=args.data_root, progress=not args.no_progress, log=lambda m: print(m, file=sys.stderr))
    from cat_bench.shipped import git_ignored, read_card

    check = read_card(out)["check"]
    print(f"written: {out} ({', '.join(sorted(p.name for p in out.iterdir()))})")
    print(f"check on the first {check['key']['n_examples']} test examples: "
          + ", ".join(f"{k} {100 * v['accuracy']:.2f}%" for k, v in check["attacks"].items()))
    print(f"verify anywhere with: {check['command']}")
    ignored = git_ignored(out)
    if ignored:
        print(f"warning: git ignores {', '.join(ignored)} in {out}: commit with `git add -f`, or the model "
              "exists only on this machine", file=sys.stderr)


def _progress(results: Path, spec) -> dict:
    """Epochs trained of the schedule's, and for a partial run the time left at its mean epoch time."""
    from cat_bench import records
    from cat_bench.costs import train_epochs
    from cat_bench.orchestrate import run_dir

    total = math.ceil(train_epochs(spec.config))
    try:
        history = records.read_jsonl(run_dir(results, spec) / records.HISTORY)
    except CorruptRecord:  # the run is failed; `state` says so
        return {"epochs": f"?/{total}", "eta": "-"}
    eta = "-"
    if history and len(history) < total:
        left = (total - len(history)) * sum(h["seconds"] for h in history) / len(history)
        eta = f"{left / 3600:.1f} h" if left >= 3600 else f"{left / 60:.0f} min"
    return {"epochs": f"{len(history)}/{total}", "eta": eta}


def _measured_rates(paths: list[Path]) -> dict[str, float]:
    """Sustained TFLOP/s per network from benchmark records (`--throughput`); a bad file is a UsageError."""
    from cat_bench.costs import measured_tflops

    rates: dict[str, float] = {}
    for path in paths:
        try:
            rates.update(measured_tflops(path))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise UsageError(f"--throughput {path}: not a benchmarks/throughput.py --record file "
                             f"({type(err).__name__}: {err})") from None
    return rates


def _plan_table(args, specs, with_cost: bool):
    import pandas as pd

    from cat_bench.costs import Pricer, run_gpu_hours, train_epochs
    from cat_bench.orchestrate import state

    from cat_bench.presets import format_eps

    if with_cost:
        args.throughput = args.throughput or sorted(args.results.glob("throughput-*.json"))
        pricer = Pricer(args.price_on, _measured_rates(args.throughput), args.gpu_tflops)
    # the hyperparameters that tell apart runs of one method in this list
    values: dict[tuple[str, str], set] = {}
    for spec in specs:
        for k, v in spec.config["hparams"].items():
            values.setdefault((spec.config["method"], k), set()).add(str(v))
    rows = []
    for spec in specs:
        c = spec.config
        differ = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(c["hparams"].items())
                  if len(values[(c["method"], k)]) > 1]
        row = {"run": spec.name, "state": state(args.results, spec), "method": c["method"], "dataset": c["dataset"],
               "arch": c["arch"], "eps": format_eps(c["eps"]), "seed": c["seed"], "hparams": " ".join(differ) or "-",
               "labels": "; ".join(spec.labels)}
        if not with_cost:
            row.update(_progress(args.results, spec))
        if with_cost:
            row["protocol"] = f"{c['protocol']}/{c['schedule']['name']}"
            row["epochs"] = train_epochs(c)
            rate = pricer.rate(c)
            row["basis"], row["rate"] = rate.basis, rate.detail
            row["hours"] = run_gpu_hours(c, spec.attacks, spec.n_examples, rate.tflops)
        rows.append(row)
    return pd.DataFrame(rows)


def _pricing(table) -> str:
    """How the dry run's hours were priced: each network's rate, measured or assumed, and where it comes from."""
    return "\n".join(f"  {basis}: {detail}" for basis, detail in
                     dict.fromkeys(zip(table.basis, table.rate)))


def _run(args) -> int:
    from cat_bench.networks import resolve_device
    from cat_bench.orchestrate import failure, move_aside, run_local, run_parallel, state, worker_devices
    from cat_bench.rundir import check_writable

    suite, specs = _suite_specs(args)
    retrain = _retrain_specs(args.retrain, specs)
    if args.jobs_per_gpu > 1 and args.gpus_per_job > 1:
        raise UsageError(f"--jobs-per-gpu {args.jobs_per_gpu} packs several runs on one GPU and --gpus-per-job "
                         f"{args.gpus_per_job} spreads one run over several; give one of them")
    if args.dry_run:
        table = _plan_table(args, specs, with_cost=True)
        unit = "CPU-hours (one process)" if args.price_on == "cpu" else f"GPU-hours ({args.price_on})"
        print(table.drop(columns="rate").to_string(index=False, float_format=lambda v: f"{v:.3g}"))
        per_method = table.groupby(["method", "dataset", "arch"]).agg(runs=("run", "size"), epochs=("epochs", "max"),
                                                                      hours=("hours", "sum"))
        print("\nper method (each trains with its authors' protocol unless the suite says otherwise):")
        print(per_method.to_string(float_format=lambda v: f"{v:.1f}"))
        todo = table[table.state != "done"]
        print(f"{suite.name}: {len(table)} runs, {int((table.state == 'done').sum())} done; "
              f"estimated {todo.hours.sum():.1f} {unit} left ({table.hours.sum():.1f} in all). Rates (sustained "
              f"TFLOP/s, cat_bench/costs.py):\n{_pricing(table)}")
        if (table.basis == "assumed").any():
            from cat_bench.costs import ASSUMPTION_RULE

            print(f"Assumed rates: {ASSUMPTION_RULE}.")
        return
    for spec in retrain:
        aside = move_aside(args.results, spec)
        print(f"{spec.name}: {'moved ' + str(aside.name) + ' aside; ' if aside else ''}training it from scratch",
              file=sys.stderr)
    if any(state(args.results, s) != "done" for s in specs):  # before hours of work, not after
        check_writable(args.results / "runs", "results directory")
    if args.executor == "slurm":
        return _submit_to_slurm(args, suite, specs, _settings(args, suite.log))
    device = resolve_device(args.device)
    _confirm_cpu_hours(args, [s.config for s in specs if state(args.results, s) == "todo"], device)
    settings = _settings(args, suite.log)  # the wall-clock budget counts from here, where the work starts
    workers = worker_devices(device, args.jobs_per_gpu) if args.gpus_per_job == 1 else [str(device)]
    if len(workers) > 1:
        outcome = run_parallel(args.results, specs, workers, settings)
    else:
        outcome = run_local(args.results, specs, settings, log=lambda m: print(m, file=sys.stderr),
                            nproc=args.gpus_per_job)
    trained = sum(v == "done" for v in outcome.values())
    stopped = sum(v == "stopped" for v in outcome.values())
    failed = [name for name, v in outcome.items() if v == "failed"]
    finished = len(specs) - stopped - len(failed) - sum(v == "busy" for v in outcome.values())
    print(f"{suite.name}: {finished} of {len(specs)} runs finished ({trained} this time)"
          f"{f', {stopped} stopped by the budget (rerun to continue)' if stopped else ''}"
          f"{f', {len(failed)} FAILED' if failed else ''} in {args.results / 'runs'}; "
          f"table: {command('results', '--suite', args.suite, '--results', args.results)}")
    for spec in (s for s in specs if s.name in failed):
        record = failure(args.results, spec)
        print(f"FAILED {spec.name}: {record['reason']}\n  fix: {record['fix']}")
        if "--retrain" in record["fix"]:
            print(f"  {command('run', '--suite', args.suite, '--results', args.results, '--retrain', spec.name)}")
    return 1 if failed else 0


def _retrain_specs(names: list[str], specs) -> list:
    """The runs `--retrain` names, each one of the suite's (after --only)."""
    by_name = {s.name: s for s in specs}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise UsageError(f"--retrain {' '.join(unknown)}: not a run of this suite (after --only); its runs: "
                         f"{', '.join(by_name) if len(by_name) <= 10 else ', '.join(list(by_name)[:10]) + ', ...'}")
    return [by_name[n] for n in dict.fromkeys(names)]


def _submit_to_slurm(args, suite, specs, settings: Settings) -> int:
    """`run --executor slurm`: one job-array task per run that is neither done nor queued already."""
    from cat_bench import slurm
    from cat_bench.orchestrate import state

    res = slurm_resources({o.name: getattr(args, o.name) for o in SLURM_OPTIONS}, suite.slurm,
                          parse_sbatch(args.slurm), args.gpus_per_job)
    slurm.check_script_path(args.results)
    queued = _queued(args.results, specs)
    todo = [s for s in specs if state(args.results, s) != "done" and s.name not in queued]
    jobs = slurm.submit(args.results, todo, settings, res, label=f"cat-bench-{suite.name}",
                        log=lambda m: print(m, file=sys.stderr))
    done = sum(state(args.results, s) == "done" for s in specs)
    print(f"submitted {len(jobs)} jobs ({done} runs already done, {len(queued)} still queued); logs in "
          f"{args.results / 'slurm'}; follow with: {command('status', *_scope(args))}")
    return 0


def _queued(results: Path, specs) -> dict[str, str]:
    """The runs whose last Slurm job may still run (pending, running, requeued), with its state."""
    from cat_bench import slurm

    jobs = slurm.submitted(results)
    mine = {s.name: jobs[s.name]["job"] for s in specs if s.name in jobs}
    states = slurm.queue_states(list(mine.values())) if mine else {}
    return {name: states[job] for name, job in mine.items() if job in states and slurm.active(states[job])}


def _status(args) -> None:
    suite, specs = _suite_specs(args)
    table = _plan_table(args, specs, with_cost=False)
    _with_queue(table, args.results)
    print(table.to_string(index=False))
    counts = table.state.value_counts()
    print(f"{suite.name}: {counts.get('done', 0)} done, {counts.get('partial', 0)} partial, "
          f"{counts.get('failed', 0)} failed, {counts.get('failed in Slurm', 0)} failed in Slurm, "
          f"{counts.get('todo', 0)} to do, of {len(table)}")
    for row in table[table.state == "failed in Slurm"].itertuples():
        print(f"failed in Slurm: {row.run}: {row.slurm}, log {row.log}")


def _with_queue(table, results: Path) -> None:
    """Add each run's last Slurm job, its state in the queue and its log (when the suite went to Slurm);
    a run whose job ended badly without a finished record is 'failed in Slurm'."""
    from cat_bench import slurm

    jobs = slurm.submitted(results)
    if not any(name in jobs for name in table.run):
        return
    states = slurm.queue_states([jobs[n]["job"] for n in table.run if n in jobs])
    table["job"] = [jobs[n]["job"] if n in jobs else "-" for n in table.run]
    table["slurm"] = [states.get(jobs[n]["job"], "?") if n in jobs else "-" for n in table.run]
    table["log"] = [jobs[n]["log"] if n in jobs else "-" for n in table.run]
    for i, row in table.iterrows():
        if row.state in ("todo", "partial") and row.slurm != "-" and slurm.died(row.slurm, row.state):
            table.loc[i, "state"] = "failed in Slurm"


def _results(args) -> None:
    from cat_bench.orchestrate import run_dir, state
    from cat_bench.presets import format_eps
    from cat_bench.results import collect, concise, format_table, summarize

    from cat_bench.external import external_runs

    _, specs = _suite_specs(args)
    states = {s.name: state(args.results, s) for s in specs}
    datasets = None if args.suite is None else {s.config["dataset"] for s in specs}
    externals = external_runs(args.results, datasets)  # models it did not train
    df = collect([run_dir(args.results, s) for s in specs if states[s.name] != "failed"] + externals)
    if df.empty and args.suite is None:
        raise UsageError(f"no finished (trained and evaluated) run in {args.results}; train one with "
                         f"{command('train', '--out', str(args.results / 'NAME'), '...')} and evaluate it with "
                         f"{command('eval', str(args.results / 'NAME'))}, or run a suite there: "
                         f"{command('run', '--suite', 'smoke', '--results', args.results)}")
    if df.empty:
        raise UsageError(f"no finished runs of suite {args.suite!r} under {args.results}; "
                         f"run: {command('run', '--suite', args.suite, '--results', args.results)}")
    table = df if args.per_seed else summarize(df)
    if not (args.wide or args.per_seed):
        table = concise(table, numeric=args.format != "markdown")
    print(format_table(table, args.format), end="")
    if df["n_examples"].nunique() == 1 and df["test_eps"].nunique() == 1:
        print(f"every row: evaluated on {df['n_examples'].iloc[0]} test examples at eps "
              f"{format_eps(df['test_eps'].iloc[0])} (each run's eval.json)", file=sys.stderr)
    shown = set(df["run"])
    if args.suite is not None:
        _note_other_evaluations([s for s in specs if s.name in shown and states[s.name] == "partial"], args)
    states = [states[s.name] for s in specs if s.name not in shown]
    missing = {k: sum(v == k for v in states) for k in ("partial", "failed", "todo")}
    if any(missing.values()):
        status = f" ({command('status', *_scope(args))})" if args.suite else ""
        print(f"not in the table: {missing['partial']} partial, {missing['failed']} failed, {missing['todo']} not "
              f"started, of {len(specs)} runs{status}", file=sys.stderr)


def _note_other_evaluations(specs, args) -> None:
    """Name the rows whose evaluation is not the one the suite asks for (another suite's, sharing the
    run: other attacks or examples), and how to complete it."""
    from cat_bench import records
    from cat_bench.data import dataset_info
    from cat_bench.orchestrate import run_dir
    from cat_bench.results import in_attack_order

    for spec in specs:
        evaluation = records.read_json(run_dir(args.results, spec) / records.EVAL)
        key, attacks = evaluation["key"], in_attack_order(evaluation["attacks"])
        wanted = spec.n_examples or dataset_info(spec.config["dataset"]).n_test
        print(f"note: {spec.name} shows an evaluation this suite did not ask for ({', '.join(attacks)} on "
              f"{key['n_examples']} examples; the suite asks for {', '.join(spec.attacks)} on {wanted}); complete "
              f"it with: {command('run', *_scope(args))}", file=sys.stderr)


def _report(args) -> None:
    import time

    from cat_bench.suite import load_suite

    _check_results(args.results)
    suite = None if args.suite is None else load_suite(args.suite)
    if suite is None and not args.results.is_dir():
        raise UsageError(f"--results {args.results}: no such folder; give the folder that holds your runs")
    from cat_bench.report import render_report  # matplotlib and jinja2: after the suite is known
    out = args.out or (args.results / "report" if suite is None else args.results / "reports" / suite.name)
    t0 = time.time()
    index = render_report(suite, args.results, out, device=args.device or "cpu", data_root=args.data_root,
                          suite_ref=args.suite, models=args.models, log=lambda m: print(m, file=sys.stderr))
    print(f"report: {index} ({time.time() - t0:.1f} s); open it in a browser, no server needed")


def _submit(args) -> None:
    from cat_bench.submit import VerificationFailed, check_robustbench_name, paper_for, read_run, submit
    from cat_bench.networks import resolve_device

    check_robustbench_name(args.name)
    config = read_run(args.run_dir)
    paper = paper_for(config["method"], title=args.title, authors=args.authors, venue=args.venue, link=args.link,
                      reported=args.reported)
    out = args.out or Path("submissions") / args.name
    device = resolve_device(args.device) if args.verify else None
    try:
        written = submit(args.run_dir, args.name, out, paper=paper, n_examples=args.n_examples,
                         footnote=args.footnote, gdrive_id=args.gdrive_id, verify_it=args.verify,
                         data_root=args.data_root, verify_n=args.verify_n, batch_size=args.batch_size, device=device,
                         log=lambda m: print(m, file=sys.stderr))
    except VerificationFailed as err:
        print(f"cat-bench: verification FAILED: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    info = written["info"]
    for key in ("model_info", "checkpoint", "model_zoo_entry", "autoattack_log"):
        print(f"written: {written[key]}")
    print(f"{args.name}: clean {info['clean_acc']}%, AutoAttack {info['autoattack_acc']}% at eps {info['eps']}"
          + (" (unreliable: gradient-masking flags)" if info["unreliable"] else ""))
    check = written["verification"]
    if check is not None:
        clean, robust = 100 * check["clean_acc_robustbench"], 100 * check["autoattack_acc_robustbench"]
        print(f"verified with robustbench {check['robustbench']}: load_model logits equal cat-bench's "
              f"(max diff {check['max_abs_logit_diff']:.2g}); benchmark on {check['n_examples']} points: clean "
              f"{clean:.2f}%, AutoAttack {robust:.2f}% ({out / 'verification.json'})")
    print("to submit: open an issue or pull request at RobustBench with the model_info JSON, upload the .pt "
          "and paste model_zoo_entry.py's ENTRY into robustbench/model_zoo/"
          f"{info['dataset']}.py (with the upload's gdrive_id)")


def _doctor(args) -> int:
    import dataclasses

    from cat_bench.networks import resolve_device

    if args.keep is not None and args.keep.exists() and (not args.keep.is_dir() or any(args.keep.iterdir())):
        raise UsageError(f"--keep {args.keep} is not an empty folder; give a new or empty one")
    device = resolve_device(args.device)
    from cat_bench.doctor import checks, run_checks, table

    names = [name for name, _ in checks()]
    unknown = [o for o in args.only or [] if not any(o in name for name in names)]
    if unknown:
        raise UsageError(f"--only {' '.join(unknown)} matches no check; checks: {', '.join(names)}")
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
    results = run_checks(device, main, args.only, log=lambda m: print(m, file=sys.stderr, flush=True), work=args.keep)
    print(table(results), end="")
    failed = [r.check for r in results if r.status == "FAIL"]
    if args.json is not None:
        from cat_bench import records

        records.write_json(args.json, {"device": str(device), "provenance": records.provenance(device),
                                       "results": [dataclasses.asdict(r) for r in results]})
    print(f"doctor on {device}: {len(results) - len(failed)} of {len(results)} checks passed or skipped"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def _list(args) -> None:
    if args.what == "methods":
        from cat_bench.methods import METHODS, protocol_for
        for name, cls in METHODS.items():
            print(f"{name}: {cls.__doc__.splitlines()[0]}")
            for key, hp in cls.HPARAMS.items():
                print(f"    {key} = {hp.cifar!r} (CIFAR) / {hp.mnist!r} (MNIST)  [{hp.source}]")
            for dataset, family in (("mnist", "mnist"), ("cifar10", "cifar"), ("cifar100", "cifar")):
                archs = [cls.DEFAULT_ARCH[family]] + sorted({a for d, a in cls.PROTOCOLS if d == dataset} - {"*"})
                for arch in dict.fromkeys(archs):
                    p = protocol_for(name, dataset, arch)
                    step = f"step {p.attack_step:.4g}" if p.attack_step is not None else f"step eps*{p.attack_step_ratio:.4g}"
                    print(f"    {dataset}/{arch}: {p.epochs} epochs, batch {p.batch_size}, {p.optimizer} lr {p.lr:g} "
                          f"wd {p.weight_decay:g}, lr /10 after epochs {list(p.milestones)}"
                          f"{' (moved in proportion by --epochs)' if p.milestones_follow_epochs else ''}"
                          f"{' (per iteration)' if p.lr_per_iteration else ''}"
                          f"{f', max {p.max_steps} steps' if p.max_steps else ''}, PGD-{p.attack_steps} {step}, "
                          f"selection {p.selection}, augment {p.augment}, normalise {p.normalize}"
                          f"{', ' + ', '.join(f'{k}={v:g}' for k, v in p.hparams.items()) if p.hparams else ''}"
                          f"  [{p.source}]")
                    family = "mnist" if dataset == "mnist" else "cifar"
                    if family in cls.SCRIPT_NETWORK and arch == cls.DEFAULT_ARCH[family]:
                        print(f"        network: {arch}, the paper's; the script itself builds {cls.SCRIPT_NETWORK[family]}")
        from cat_bench.presets import EVALUATION_NOTE
        for family, note in EVALUATION_NOTE.items():
            print(f"evaluation, {family}: {note}")
    elif args.what == "datasets":
        from cat_bench.data import DATASETS
        for name, info in DATASETS.items():
            print(f"{name}: {info.description}")
    elif args.what == "attacks":
        from cat_bench.eval_attacks import ATTACKS
        for family in dict.fromkeys(f for a in ATTACKS.values() for f in a.presets):
            for name, attack in ATTACKS.items():
                if family in attack.presets:
                    print(f"{family:<6} {name:<11} {attack.presets[family].source}")
    elif args.what == "options":
        print("run options (a suite block's key, `cat-bench train`'s flag, what is allowed: what it does); "
              "each is part of the run's identity")
        print("\n".join(schema()))
    else:
        from cat_bench.models import ARCHITECTURES
        for name, desc in ARCHITECTURES.items():
            print(f"{name}: {desc}")


RESUME_HINT = {  # what continues each interrupted command
    "train": "rerun the same command with --resume to continue from the last finished epoch",
    "eval": "rerun the same command to finish evaluating: finished attacks are kept and skipped",
    "run": "rerun the same command to continue: finished runs are skipped, the others resume",
}


def _dispatch(args: argparse.Namespace) -> int | None:
    """Run the handler of `args.command`."""
    return {"train": _train, "eval": _eval, "compare": _compare, "export": _export, "run": _run, "status": _status,
            "results": _results, "report": _report, "submit": _submit, "doctor": _doctor,
            "list": _list}[args.command](args)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `cat-bench` console script."""
    args = _parser().parse_args(argv)
    try:
        code = _dispatch(args)
    except UsageError as err:
        print(f"cat-bench: error: {err}", file=sys.stderr)
        return 2
    except (GroupFailed, Diverged) as err:
        print(f"cat-bench: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"cat-bench: interrupted; {RESUME_HINT.get(args.command, 'rerun the same command')}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `cat-bench ... | head`: the reader left; say nothing more
        sys.stdout = open(os.devnull, "w")
        return 0
    except OSError as err:  # a full disk, a folder that became unwritable: no traceback, the file named
        where = f": {err.filename}" if err.filename else ""
        print(f"cat-bench: error: {err.strerror or err}{where}", file=sys.stderr)
        return 1
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
