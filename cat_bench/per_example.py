"""Per-example records: which test examples stay correct under each attack, one small file per attack.

`cat-bench eval` writes, beside eval.json, for every attack it runs:

    examples/<attack>-<key hash>.json   {"format", "attack", "key", "dataset", "indices", "n", "n_correct",
                                         "correct"}

`indices` names the test examples: {"split": "test", "start": 0, "stop": n}, the first n of the
dataset's test split (cat_bench.evaluate.load_test_examples). `key` is the evaluation key of
eval.json (checkpoint, epoch or weights' SHA-256, n_examples, eps), and the file name carries its
hash, so evaluations under other keys keep their own files. `correct` is the bit per example
(numpy.packbits, big-endian bit order, base64): 10,000 examples take 1,667 characters.
`n_correct / n` is the attack's accuracy in eval.json, exactly.

From these files come the worst case over every attack run (an example counts only if it stays
correct under all of them; "worst-case" in eval.json and in the tables) and `cat-bench compare`.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import numpy as np

from cat_bench import records
from cat_bench.errors import CorruptRecord

FORMAT = "cat-bench per-example 1"
FOLDER = "examples"
WORST = "worst-case"


def key_hash(key: dict) -> str:
    """Eight hex digits naming an evaluation key in file names."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]


def relative_path(attack: str, key: dict) -> str:
    """Where the record of `attack` under `key` lives, relative to the run directory."""
    return f"{FOLDER}/{attack}-{key_hash(key)}.json"


def encode(correct: np.ndarray) -> str:
    return base64.b64encode(np.packbits(correct.astype(bool)).tobytes()).decode("ascii")


def decode(text: str, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8), count=n).astype(bool)


def write(run_dir: Path, attack: str, key: dict, dataset: str, correct) -> str:
    """Write one attack's record (atomically); returns its path relative to the run directory.

    `correct`: a bool array (or anything numpy.asarray takes), one entry per test example in order.
    """
    correct = np.asarray(correct, dtype=bool)
    rel = relative_path(attack, key)
    records.write_json(Path(run_dir) / rel, {
        "format": FORMAT, "attack": attack, "key": key, "dataset": dataset,
        "indices": {"split": "test", "start": 0, "stop": int(len(correct))},
        "n": int(len(correct)), "n_correct": int(correct.sum()), "correct": encode(correct)})
    return rel


def read(path: Path) -> tuple[dict, np.ndarray]:
    """A record and its correctness bits; CorruptRecord if the bits do not give its n_correct."""
    rec = records.read_json(path)
    try:
        if rec.get("format") != FORMAT:
            raise ValueError(f"format {rec.get('format')!r}, not {FORMAT!r}")
        correct = decode(rec["correct"], rec["n"])
        if len(correct) != rec["n"] or int(correct.sum()) != rec["n_correct"]:
            raise ValueError("its bits do not add up to its n_correct")
    except (KeyError, TypeError, ValueError) as err:
        raise CorruptRecord(f"corrupt record {path}: not a per-example record ({err})") from None
    return rec, correct


def worst_case(run_dir: Path, evaluation: dict) -> dict | None:
    """eval.json's "worst-case" entry for its current evaluation: correct under every attack run
    (each with a per-example record under the same key); None if some attack has none."""
    attacks = evaluation.get("attacks", {})
    paths = {name: a.get("examples") for name, a in attacks.items()}
    if not paths or any(p is None for p in paths.values()):
        return None
    correct = None
    for name, rel in paths.items():
        rec, bits = read(Path(run_dir) / rel)
        if rec["key"] != evaluation["key"]:
            return None
        correct = bits if correct is None else correct & bits
    rel = write(run_dir, WORST, evaluation["key"], rec["dataset"], correct)
    return {"accuracy": int(correct.sum()) / len(correct), "attacks": sorted(paths), "examples": rel}
