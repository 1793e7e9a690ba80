"""Run records on disk: atomic JSON and checkpoint writes, append-only JSONL, provenance.

A run directory holds `config.json` (fully resolved config with seed, versions, git commit),
`history.jsonl` (one line per epoch), `sessions.jsonl` (one line each time training starts or resumes), `checkpoints/last.pt` and `checkpoints/best.pt`, `eval.json`
and a `done` marker. Every file is written to a temporary name and renamed into place, so a killed
process never leaves a half-written file.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import platform
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from cat_bench.errors import CorruptRecord, UsageError
from cat_bench.lazy import torch
from cat_bench.shell import command

CONFIG = "config.json"
HISTORY = "history.jsonl"
TRACE = "trace.jsonl"  # CAT: the mask (mean, std) and losses every few batches
SESSIONS = "sessions.jsonl"
DONE = "done"
FAILED = "failed.json"  # a suite could not train or evaluate the run: the reason and the fix
EVAL = "eval.json"
LAST = "checkpoints/last.pt"
BEST = "checkpoints/best.pt"


TEMP_SUFFIX = ".tmp"  # `.NAME.XXXXXXXX.tmp`: a write in progress, or left by a killed one (rundir cleans them)


def _umask() -> int:
    """The process's umask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def refuse_links(path: Path) -> None:
    """UsageError when `path` or its folder is a symbolic link: cat-bench never writes through a link (the
    file it points to is not the run's, and may be anyone's)."""
    for p in (path, path.parent):
        if p.is_symlink():
            raise UsageError(f"{p} is a link (to {os.readlink(p)}); cat-bench does not write through links: "
                             f"replace it with a real {'file' if p == path else 'folder'}, or remove it")


def _atomic(path: Path, write) -> None:
    """Write `path` through a temp file renamed into place; the file gets 0666 less the umask, as open() gives."""
    refuse_links(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (temp file + rename)."""
    _atomic(Path(path), lambda fh: fh.write((json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()))


def write_text(path: Path, text: str) -> None:
    """Write UTF-8 text atomically (temp file + rename)."""
    _atomic(Path(path), lambda fh: fh.write(text.encode("utf-8")))


def read_json(path: Path, kind: type = dict) -> Any:
    """Read a JSON record of type `kind` (every record is an object); anything else in its place (not
    UTF-8, not JSON, another type, a folder) is a CorruptRecord naming the file."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, IsADirectoryError, NotADirectoryError) as err:  # JSONDecodeError, UnicodeDecodeError
        raise CorruptRecord(f"corrupt record {path}: {type(err).__name__}: {err}") from None
    if not isinstance(value, kind):
        raise CorruptRecord(f"corrupt record {path}: holds a JSON {type(value).__name__}, not a {kind.__name__}")
    return value


def save_checkpoint(path: Path, state: dict) -> None:
    """torch.save atomically. torch reports a failed write (a full disk) as a RuntimeError from its
    zip writer; it becomes the OSError it is, naming the file."""
    def write(fh):
        try:
            torch.save(state, fh)
        except RuntimeError as err:
            raise OSError(errno.EIO, f"torch.save could not write (is the disk full?): {err}".strip(), str(path)) from None

    _atomic(Path(path), write)


def load_checkpoint(path: Path) -> dict:
    """torch.load(weights_only=True); a missing file is a UsageError, a corrupt one a CorruptRecord, naming it."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"missing checkpoint {path}; train the run first ({command('train', '...', '--out', path.parents[1])})")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated/garbled files
        raise CorruptRecord(f"corrupt checkpoint {path}: {type(err).__name__}: {err}") from None


def append_jsonl(path: Path, obj: dict) -> None:
    """Append one record line to a JSONL history (flushed and fsynced). A torn last line a kill left
    (no newline at its end) is cut off first, so the new line never joins it. Never through a link."""
    path = Path(path)
    refuse_links(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o666)
    except OSError as err:
        if path.is_symlink():  # made between the check and the open
            refuse_links(path)
        raise
    with open(fd, "ab+") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size:
            fh.seek(size - 1)
            if fh.read(1) != b"\n":
                fh.seek(0)
                fh.truncate(fh.read().rfind(b"\n") + 1)
        fh.write((json.dumps(obj, sort_keys=True) + "\n").encode())
        fh.flush()
        os.fsync(fh.fileno())


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """Replace a JSONL history with `rows`, atomically (temp file + rename): a kill leaves the old
    history or the new one, never a part."""
    text = "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows)
    _atomic(Path(path), lambda fh: fh.write(text.encode()))


def read_jsonl(path: Path) -> list[dict]:
    """Every line of a JSONL history. A torn last line (no newline: a kill mid-append) is dropped; any
    other line that is not a JSON object is a CorruptRecord naming the file and the line, so a
    damaged history is never silently cut short."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except (IsADirectoryError, NotADirectoryError) as err:
        raise CorruptRecord(f"corrupt record {path}: {type(err).__name__}: {err}") from None
    lines = text.split("\n")[:-1]  # after the last newline: "" or a torn line
    rows = []
    for number, line in enumerate(lines, start=1):
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if not isinstance(row, dict):
            raise CorruptRecord(f"corrupt record {path}: line {number} is not a JSON object ({line[:60]!r}); "
                                f"repair or remove that line")
        rows.append(row)
    return rows


def training_sessions(run_dir: Path) -> tuple[list[dict], int]:
    """The sessions that trained the weights and history a run holds, and how many came before them:
    `sessions.jsonl` from its last start at epoch 0 on (a start from scratch, after a kill before the
    first checkpoint or on a machine without the checkpoints, replaces what any earlier start trained)."""
    sessions = read_jsonl(Path(run_dir) / SESSIONS)
    starts = [i for i, s in enumerate(sessions) if s.get("start_epoch") == 0]
    first = starts[-1] if starts else 0
    return sessions[first:], first


# Identity keys added after runs were recorded, with the value every earlier run had. The hash
# leaves such a key out at that value, so earlier run directories keep their names; an earlier
# identity reads as if it held the key (`read_identity`).
LATER_KEYS = {"precision": "fp32"}


def config_hash(config: dict) -> str:
    """Short stable hash of a resolved config's identity (the run directory's name)."""
    kept = {k: v for k, v in config.items() if not (k in LATER_KEYS and v == LATER_KEYS[k])}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:12]


RUN_NAME = re.compile(r"[a-z0-9-]+-[0-9a-f]{12}")  # METHOD-DATASET-HASH


def normalised(identity: dict) -> dict:
    """An identity as any record holds it, with every key that older records lack filled in with the
    value those runs had, so that no reader guesses a default: LATER_KEYS; "protocol" "valid"
    (before pixel protocols, inputs were always clipped to [0,1]); the schedule's "name" "official"
    (before `--schedule`, every method trained with its authors' protocol)."""
    out = {**LATER_KEYS, "protocol": "valid", **identity}
    if isinstance(out.get("schedule"), dict):
        out["schedule"] = {"name": "official", **out["schedule"]}
    return out


def read_identity(run_dir: Path) -> dict:
    """The resolved config a run directory was trained with (config.json's identity), `normalised`.

    A directory named like a run (METHOD-DATASET-HASH) must hold the identity that hashes to its name:
    an edited or damaged config.json is a CorruptRecord, never a run that claims settings it did not train with.
    """
    run_dir = Path(run_dir)
    identity = read_json(run_dir / CONFIG).get("identity")
    if not isinstance(identity, dict) or not {"method", "dataset"} <= set(identity):
        raise CorruptRecord(f"corrupt record {run_dir / CONFIG}: no run identity (method, dataset, ...) in it")
    if RUN_NAME.fullmatch(run_dir.name) and run_name(identity) != run_dir.name:
        raise CorruptRecord(f"corrupt record {run_dir / CONFIG}: its identity hashes to {run_name(identity)}, not to "
                            f"the directory's name {run_dir.name} (edited by hand?)")
    return normalised(identity)


def verify_run(run_dir: Path) -> None:
    """Read every record of a run directory once: CorruptRecord names the first that cannot be used, so
    every command (run, status, results, report) calls the same run failed."""
    run_dir = Path(run_dir)
    if (run_dir / CONFIG).exists():
        read_identity(run_dir)
    if (run_dir / DONE).exists() and not isinstance(read_json(run_dir / DONE).get("best_epoch"), int):
        raise CorruptRecord(f"corrupt record {run_dir / DONE}: no best_epoch in it")
    if (run_dir / EVAL).exists():
        _check_evaluation(run_dir / EVAL, read_json(run_dir / EVAL))
    for name in (HISTORY, TRACE, SESSIONS):
        read_jsonl(run_dir / name)


def _check_evaluation(path: Path, ev: dict) -> None:
    """eval.json's top level as `evaluate` writes it: a key (n_examples, eps) and attacks with accuracies."""
    key, attacks = ev.get("key"), ev.get("attacks")
    number = (int, float)
    if not (isinstance(key, dict) and isinstance(key.get("n_examples"), int) and isinstance(key.get("eps"), number)
            and isinstance(attacks, dict)
            and all(isinstance(a, dict) and isinstance(a.get("accuracy"), number) for a in attacks.values())):
        raise CorruptRecord(f"corrupt record {path}: not an evaluation (key with n_examples and eps, attacks with "
                            f"accuracies)")


def run_name(config: dict) -> str:
    """A run directory's name: METHOD-DATASET-HASH of its resolved config."""
    return f"{config['method']}-{config['dataset']}-{config_hash(config)}"


def git_commit() -> str | None:
    """The git commit of the cat-bench checkout; else $CAT_BENCH_GIT_COMMIT, which a copy without
    .git (an offline GPU machine, an installed wheel) is given by whoever sent it; else None."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        out = None
    if out is None or out.returncode != 0:
        return os.environ.get("CAT_BENCH_GIT_COMMIT")
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=Path(__file__).parent,
                           capture_output=True, text=True, timeout=10).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


def provenance(device: torch.device) -> dict:
    """Versions, git commit and hardware, recorded with every run and evaluation."""
    import torchvision

    import cat_bench
    try:
        from importlib.metadata import version
        autoattack_version = version("pyautoattack")
    except Exception:
        autoattack_version = None
    hw = {"device": str(device), "cpu": _cpu_model() or platform.processor() or platform.machine(),
          "cpu_isa": _cpu_isa(), "kernels": torch.backends.cpu.get_cpu_capability(),
          "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
          "thread_env": {k: os.environ[k] for k in THREAD_ENV if k in os.environ}}
    if device.type == "cuda":
        hw["gpu"] = torch.cuda.get_device_name(device)
    build = {"cuda": torch.version.cuda, "mkl": torch.backends.mkl.is_available(),
             "mkldnn": torch.backends.mkldnn.is_available()}
    determinism = {"deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
                   "cudnn_benchmark": torch.backends.cudnn.benchmark,
                   "cudnn_deterministic": torch.backends.cudnn.deterministic}
    return {"cat_bench": cat_bench.__version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "pyautoattack": autoattack_version, "python": platform.python_version(), "git_commit": git_commit(),
            "hardware": hw, "torch_build": build, "determinism": determinism}


THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "ATEN_CPU_CAPABILITY")
_ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")


@functools.cache
def _cpuinfo() -> str:
    """/proc/cpuinfo, read once per process ("" where there is none)."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def _cpu_model() -> str | None:
    """The CPU's model name (Linux /proc/cpuinfo), e.g. "AMD EPYC"."""
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return None


def _cpu_isa() -> list[str]:
    """The vector instruction sets that decide which CPU kernels torch runs (and so the float rounding)."""
    for line in _cpuinfo().splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            return [f for f in _ISA_FLAGS if f in flags]
    return []
