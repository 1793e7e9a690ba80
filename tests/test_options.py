"""The run options are declared once (cat_bench.options): `cat-bench train`'s flags, a suite block's keys
and `resolve_config` agree on every one, bad values are refused the same way everywhere, and the
suite schema that smoke.toml documents names them all."""

import pytest

from cat_bench import train as train_module
from cat_bench.cli import main
from cat_bench.options import RUN_OPTIONS
from cat_bench.suite import SUITES_DIR, load_suite
from cat_bench.config import resolve_config

# one value other than the default for every option: a test fails here when an option is added without one
OTHER = {"arch": "smallcnn", "schedule": "uniform", "protocol": "valid", "precision": "bf16", "ema": 0.99,
         "epochs": 3, "batch_size": 20, "n_train": 40, "select_on": "val", "select_n": 30}


def test_every_option_has_a_test_value():
    assert set(OTHER) == {o.name for o in RUN_OPTIONS}


@pytest.mark.parametrize("option", RUN_OPTIONS, ids=lambda o: o.name)
def test_the_flag_the_suite_key_and_the_keyword_make_one_run(option, tmp_path, monkeypatch):
    """resolve_config's keyword, a suite's key and train's flag give one identity, unlike the default's."""
    value = OTHER[option.name]
    config = resolve_config("at", "mnist-mini", 0.3, **{option.name: value})
    assert config != resolve_config("at", "mnist-mini", 0.3)
    suite = tmp_path / "one.toml"
    suite.write_text(f'description = "one option"\n[[runs]]\nmethods = ["at"]\ndataset = "mnist-mini"\n'
                     f'eps = [0.3]\nattacks = ["natural"]\n{option.name} = {value!r}\n'.replace("'", '"'))
    assert load_suite(str(suite)).runs[0].config == config
    trained = []
    monkeypatch.setattr(train_module, "train", lambda config, out, *args, **kw: trained.append(config)
                        or {"done": False, "epochs_trained": 0, "epochs": 1})
    assert main(["train", "--method", "at", "--dataset", "mnist-mini", "--eps", "0.3", option.flag, str(value),
                 "--out", str(tmp_path / "run")]) == 0
    assert trained == [config]


@pytest.mark.parametrize("option, bad", [("precision", "fp16"), ("schedule", "fast"), ("epochs", 0), ("ema", 1.5),
                                         ("select_on", "train")])
def test_a_bad_value_is_refused_naming_it_and_what_is_allowed(option, bad, tmp_path, capsys):
    opt = next(o for o in RUN_OPTIONS if o.name == option)
    with pytest.raises(Exception) as err:
        resolve_config("at", "mnist-mini", 0.3, **{option: bad})
    assert repr(bad) in str(err.value)
    code = main(["train", "--method", "at", "--dataset", "mnist-mini", "--eps", "0.3", opt.flag, str(bad),
                 "--out", str(tmp_path / "r")])
    assert code == 2 and repr(bad) in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_smoke_toml_documents_every_option():
    comment = "".join(line for line in (SUITES_DIR / "smoke.toml").read_text().splitlines(True)
                      if line.startswith("#"))
    listed = comment.split("any run option:")[1].split("(`cat-bench list options`")[0]
    assert [w.strip(" ,#\n") for w in listed.replace("\n", " ").split(",")] == [o.name for o in RUN_OPTIONS]


def test_list_options_prints_every_option(capsys):
    assert main(["list", "options"]) == 0
    out = capsys.readouterr().out
    assert all(f"{o.name} " in out and o.flag in out for o in RUN_OPTIONS)
