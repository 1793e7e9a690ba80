"""The numbers the README and docs state that code or a committed measurement can check: dataset sizes,
the smoke run's steps, and the quick-start times (each stated with its machine, read against the table
of results/smoke/README.md that recorded them)."""

import re
from pathlib import Path

from cat_bench.data import dataset_info, load_split
from cat_bench.suite import load_suite

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
USAGE = (REPO / "docs" / "usage.md").read_text()
TIMINGS = (REPO / "results" / "smoke" / "README.md").read_text()


def number(text: str) -> int:
    return int(text.replace(",", ""))


def measured(command_start: str) -> int:
    """The wall seconds of the timing table's row whose command starts so."""
    row = re.search(rf"^\| `{re.escape(command_start)}[^`]*` \| (\d+) s \|$", TIMINGS, re.M)
    assert row, f"no timing row for {command_start!r} in results/smoke/README.md"
    return int(row.group(1))


def test_mnist_mini_sizes_are_the_assets():
    found = re.search(r"`mnist-mini` \(([\d,]+) training and ([\d,]+) test digits", README)
    assert found, "README.md no longer states mnist-mini's size"
    info = dataset_info("mnist-mini")
    assert (number(found.group(1)), number(found.group(2))) == (info.n_train, info.n_test)
    assert (len(load_split("mnist-mini", "train")[1]), len(load_split("mnist-mini", "test")[1])) == \
        (info.n_train, info.n_test)


def test_the_first_runs_digits_are_its_n_train():
    claimed = re.search(r"This trains CATcent on ([\d,]+) real MNIST digits", USAGE)
    given = re.search(r"cat-bench train --method cat-cent --dataset mnist-mini .*--n-train (\d+)", USAGE)
    assert claimed and given and number(claimed.group(1)) == int(given.group(1))


def test_the_smoke_runs_steps_and_digits_are_the_suites():
    claimed = re.search(r"The smoke run trains AT for (\d+) steps on ([\d,]+) digits", README)
    assert claimed
    config = next(s.config for s in load_suite("smoke").runs if s.config["method"] == "at")
    steps = config["schedule"]["epochs"] * (config["n_train"] // config["schedule"]["batch_size"])
    assert (int(claimed.group(1)), number(claimed.group(2))) == (steps, config["n_train"])


def test_quick_start_times_are_the_recorded_measurements():
    smoke = re.search(r"--only method=at +# (\d+) s on 2 idle cores", README)
    assert smoke and int(smoke.group(1)) == measured("cat-bench run --suite smoke --results runs --only method=at")
    first = re.search(r"\((\d+) s and (\d+) s on the development machine's 2 idle cores", USAGE)
    train, evaluate = measured("cat-bench train --method cat-cent"), measured("cat-bench eval runs/first")
    assert first and (int(first.group(1)), int(first.group(2))) == (train, evaluate)
    assert "## A first CAT run (about two minutes on 2 idle CPU cores" in USAGE and 90 <= train + evaluate <= 150
    assert "2 CPU cores, AMD" in TIMINGS and "nothing else running" in TIMINGS  # the machine the times are of
