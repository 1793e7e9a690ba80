"""End to end on mnist-mini through the CLI: CAT's mask under the code's and the batch-summed Eq. 14.

Measured on the 2-core CPU machine (docs/usage.md, "A first CAT run": 2 epochs of 2,000 digits at batch 50):
with the code's reduction of Eq. 14 (KL / B) the mask collapses to 0 within ten batches (x_cal = x: natural
training, PGD-20 0.0%), so the epoch-2 mean is flagged already on 1,000 digits, which the test trains; with the
KL summed over the batch it saturates at 1 from about batch 20 of the 2,000 digits (x_cal = x + delta: PGD-20
about 30%). Both are flagged.
"""

import json

from cat_bench import records
from cat_bench.cli import main


def train_and_eval(tmp_path, name, n_train, *sets):
    out = tmp_path / name
    extra = ["--set", *sets] if sets else []
    assert main(["train", "--method", "cat-cent", "--dataset", "mnist-mini", "--eps", "0.3", "--epochs", "2",
                 "--n-train", str(n_train), "--batch-size", "50", "--select-n", "300", "--out", str(out),
                 "--no-progress", *extra]) == 0
    assert main(["eval", str(out), "--attacks", "natural,pgd20", "--n-examples", "500", "--no-progress"]) == 0
    acc = {k: v["accuracy"] for k, v in json.loads((out / "eval.json").read_text())["attacks"].items()}
    flags = {r["mask_flag"] for r in records.read_jsonl(out / records.HISTORY) if "mask_flag" in r}
    return acc, flags, records.read_json(out / records.DONE)


def test_mask_collapse_and_saturation_are_flagged(tmp_path, capsys):
    code, code_flags, done = train_and_eval(tmp_path, "code", 1000)
    assert code_flags == {"collapsed"} and done["mask_flag_epochs"]
    assert "WARNING" in capsys.readouterr().err
    assert code["pgd20"] <= 0.05 and code["natural"] >= 0.6  # no calibration: natural training
    summed, sum_flags, _ = train_and_eval(tmp_path, "sum", 2000, "g_kl_reduction=sum")
    assert sum_flags == {"saturated"}
    assert summed["pgd20"] >= 0.15 and summed["natural"] >= 0.6  # x_cal = x + delta: adversarial training
