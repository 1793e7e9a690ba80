"""Run records on disk: atomic JSON and checkpoint writes, append-only JSONL, provenance.

A run directory holds `config.json` (fully resolved config with seed, versions, git commit),
`history.jsonl` (one line per epoch), `sessions.jsonl` (one line each time training starts or resumes), `checkpoints/last.pt` and `checkpoints/best.pt`, `eval.json`
and a `done` marker. Every file is written to a temporary name and renamed into place, so a killed
process never leaves a half-written file.
"""

from __future__ import annotations

import errno
import functools
import glob
import hashlib
import json
import os
import platform
import re
import shutil
import socket
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
    check_archive(path)
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
    except OSError:
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
# What every reader of an identity uses, with its type (besides method, dataset and the schedule's epochs;
# n_train None: the whole training split).
IDENTITY_KEYS = {"arch": str, "eps": (int, float), "seed": int, "n_train": (int, type(None)), "hparams": dict}


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

    The identity must hash to the run name config.json was written with (`run_name`; for records
    without it, to the directory's name when that is METHOD-DATASET-HASH): an edited or damaged
    config.json is a CorruptRecord, never a run that claims settings it did not train with.
    """
    run_dir = Path(run_dir)
    config = read_json(run_dir / CONFIG)
    identity = config.get("identity")
    if not isinstance(identity, dict) or not {"method", "dataset"} <= set(identity):
        raise CorruptRecord(f"corrupt record {run_dir / CONFIG}: no run identity (method, dataset, ...) in it")
    missing = [key for key, kind in IDENTITY_KEYS.items() if not isinstance(identity.get(key), kind)]
    if not isinstance(identity.get("schedule"), dict) or not isinstance(identity["schedule"].get("epochs"), int):
        missing.append("schedule (a dict with its epochs)")
    if missing:
        raise CorruptRecord(f"corrupt record {run_dir / CONFIG}: its identity lacks {', '.join(missing)}; train the "
                            f"run again")
    named = config.get("run_name") or (run_dir.name if RUN_NAME.fullmatch(run_dir.name) else None)
    if named is not None and run_name(identity) != named:
        where = "the name it was written with" if "run_name" in config else "the directory's name"
        raise CorruptRecord(f"corrupt record {run_dir / CONFIG}: its identity hashes to {run_name(identity)}, not to "
                            f"{where} {named} (edited by hand?)")
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
        check_evaluation(run_dir / EVAL, read_json(run_dir / EVAL))
    for name in (HISTORY, TRACE, SESSIONS):
        rows = read_jsonl(run_dir / name)
        if name != SESSIONS:
            _check_epochs(run_dir / name, rows)


def _check_epochs(path: Path, rows: list[dict]) -> None:
    """Every row of a history or trace names its epoch with an integer (what curves and resumes index by)."""
    for line, row in enumerate(rows, 1):
        if not isinstance(row.get("epoch"), int) or isinstance(row["epoch"], bool):
            raise CorruptRecord(f"corrupt record {path}: line {line} has epoch {row.get('epoch')!r}, not an epoch "
                                f"number")


def check_evaluation(path: Path, ev: dict) -> None:
    """eval.json's top level as `evaluate` writes it: a key (n_examples, eps) and attacks with accuracies."""
    key, attacks = ev.get("key"), ev.get("attacks")
    number = (int, float)
    if not (isinstance(key, dict) and isinstance(key.get("n_examples"), int) and isinstance(key.get("eps"), number)
            and isinstance(attacks, dict)
            and all(isinstance(a, dict) and isinstance(a.get("accuracy"), number)
                    and isinstance(a.get("settings"), dict) for a in attacks.values())):
        raise CorruptRecord(f"corrupt record {path}: not an evaluation (key with n_examples and eps, attacks with "
                            f"accuracies and settings); run cat-bench eval again")


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


def missing_folders(folder: Path) -> list[Path]:
    """`folder` and those of its parents that do not exist yet, innermost first (what a
    `mkdir(parents=True)` would make, so a refusal can remove them again)."""
    folder = Path(os.path.abspath(folder))
    missing = []
    for path in (folder, *folder.parents):
        if path.exists() or path.is_symlink():
            break
        missing.append(path)
    return missing


def remove_empty(folders: list[Path]) -> None:
    """Remove `folders` (innermost first, as `missing_folders` lists them) while they are empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def temp_folder(out: Path) -> Path:
    """A new hidden folder beside `out` to build it in, then rename into place (`.NAME.HOST-PID.XXXX.tmp`:
    a later build tells a killed one's leftovers from one in progress). The folders of killed builds
    of `out` on this host (their process is gone) are removed first, so none is left for git to commit."""
    host = socket.gethostname()
    pattern = re.compile(rf"\.{re.escape(out.name)}\.{re.escape(host)}-(\d+)\..*{re.escape(TEMP_SUFFIX)}")
    for old in out.parent.glob(f".{glob.escape(out.name)}.*{TEMP_SUFFIX}"):
        found = pattern.fullmatch(old.name)
        if found and old.is_dir() and not old.is_symlink() and not _running(int(found.group(1))):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.{host}-{os.getpid()}.", suffix=TEMP_SUFFIX))


def _running(pid: int) -> bool:
    """Whether a process with this id exists on this host (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


MAX_EXPANSION = 100  # a zip member's size over its stored size: torch.save and torch.export store theirs (1)
EXPANSION_FLOOR = 1 << 20  # members this small are never a bomb, however well they compress


def check_archive(path: Path) -> None:
    """UsageError for a zip archive (what torch.save, torch.export and TorchScript write) whose members
    expand more than MAX_EXPANSION times: a zip bomb would fill the memory of whatever reads it. Reads
    the central directory only; a file that is not a zip archive passes (its loader names what it is)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return
    for member in members:
        if member.file_size > max(EXPANSION_FLOOR, MAX_EXPANSION * member.compress_size):
            raise UsageError(f"{path}: member {member.filename} would expand from {member.compress_size:,} to "
                             f"{member.file_size:,} bytes (more than {MAX_EXPANSION} times; torch writes its "
                             f"archives uncompressed): a zip bomb, refused before anything is read")
