"""The cluster path: the settings and resources each Slurm job gets, and suites run on a real Slurm.

The tests marked `slurm` run against a one-node cluster that scripts/slurm_cluster.sh starts for the
session (two slurmd: `gpu-node` with four fake GPUs in partition `gpu`, `cpu-node` without GPUs in
partition `cpu`); they are skipped, with the reason, where sbatch is missing or the daemons cannot
be started (not root). Every job asks for one CPU per task, so its numbers are a one-thread run's.
"""

import dataclasses
import os
import pickle
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from test_orchestrate import TINY  # two tiny runs, natural and AT, two epochs

from cat_bench import records, slurm
from cat_bench.cli import _parser, _settings, main
from cat_bench.errors import UsageError
from cat_bench.orchestrate import run_dir, state
from cat_bench.settings import SLURM_OPTIONS, Settings, SlurmResources, check_slurm_table, slurm_resources
from cat_bench.suite import RunSpec, load_suite

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "slurm_cluster.sh"


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# What a job is given: the settings whole, the resources the cluster asks for

EVERY_SETTING = ["--device", "cpu", "--data-root", "/data/here", "--compile", "max-autotune", "--deterministic",
                 "--log", "tensorboard", "--no-progress", "--stop-after-epoch", "3", "--stop-after-minutes", "45"]


def every_setting(extra=()):
    """The command line's settings with every field given a value other than its default."""
    args = _parser().parse_args(["run", "--suite", "smoke", *EVERY_SETTING, *extra])
    settings = _settings(args)
    defaults = Settings()
    changed = {f.name for f in dataclasses.fields(Settings) if getattr(settings, f.name) != getattr(defaults, f.name)}
    assert changed == {f.name for f in dataclasses.fields(Settings)}  # a new field needs a flag here
    return settings


def test_the_command_line_sets_every_field_of_the_settings():
    settings = every_setting()
    assert settings == Settings(device="cpu", data_root="/data/here", compile="max-autotune", deterministic=True,
                                trackers=("tensorboard",), progress=False, stop_after_epoch=3,
                                stop_after_minutes=45.0, started=settings.started)
    assert settings.deadline == pytest.approx(settings.started + 45 * 60)
    assert pickle.loads(pickle.dumps(settings)) == settings


def test_a_suites_trackers_are_used_unless_the_command_line_names_its_own():
    args = _parser().parse_args(["run", "--suite", "smoke"])
    assert _settings(args, ("tensorboard",)).trackers == ("tensorboard",)
    args = _parser().parse_args(["run", "--suite", "smoke", "--log", "tensorboard"])
    assert _settings(args, ()).trackers == ("tensorboard",)


def test_a_requeued_job_keeps_its_settings(tmp_path):
    submitit = pytest.importorskip("submitit")
    spec = load_suite("smoke").runs[0]
    settings = every_setting()
    resubmission = slurm.SlurmJob(tmp_path, spec, settings).checkpoint()
    assert isinstance(resubmission, submitit.helpers.DelayedSubmission)
    job = resubmission.function
    assert (job.spec, job.results, job.settings) == (spec, tmp_path, settings)


@pytest.mark.parametrize("gpus, expected", [(4, {"gpus_per_node": 2}), (0, {})])
def test_jobs_ask_for_gpus_only_where_the_partition_has_them(gpus, expected):
    part = slurm.Partition("p", gpus, 16)
    params = slurm.parameters(SlurmResources(partition="p", gpus_per_job=2), part, "run-name")
    assert {k: v for k, v in params.items() if k == "gpus_per_node"} == expected
    assert params["tasks_per_node"] == 2 and params["cpus_per_task"] == 8 and params["slurm_job_name"] == "run-name"
    own = slurm.parameters(SlurmResources(sbatch=(("gres", "gpu:a100:1"),)), part, "x")
    assert "gpus_per_node" not in own and own["slurm_additional_parameters"]["gres"] == "gpu:a100:1"


def test_cpus_per_task_default_to_the_nodes_share_and_flags_win():
    small = slurm.Partition("cpu", 0, 2)
    assert slurm.parameters(SlurmResources(gpus_per_job=2), small, "x")["cpus_per_task"] == 1
    assert slurm.parameters(SlurmResources(cpus_per_task=3, mem="4G"), small, "x")["cpus_per_task"] == 3
    assert slurm.parameters(SlurmResources(mem="4G"), small, "x")["slurm_mem"] == "4G"


def test_sinfo_gres_strings_give_gpus_per_node():
    assert [slurm._gpus(g) for g in ("(null)", "gpu:4", "gpu:a100:8(S:0-1)", "gpu:2,shard:8")] == [0, 4, 8, 2]


def test_the_command_line_wins_over_the_suites_slurm_table_per_key():
    table = check_slurm_table({"partition": "gpu", "mem": "64G", "sbatch": {"account": "lab", "qos": "low"}}, "s")
    res = slurm_resources({"mem": "8G", "partition": None}, table, {"qos": "high", "exclusive": True}, 4)
    assert (res.partition, res.mem, res.gpus_per_job, res.time) == ("gpu", "8G", 4, 24 * 60)
    assert dict(res.sbatch) == {"account": "lab", "qos": "high", "exclusive": True}


@pytest.mark.parametrize("table, words", [
    ({"partiton": "gpu"}, "unknown key 'partiton'"),
    ({"time": "1h"}, "key 'time'"),
    ({"mem": "lots"}, "--mem 'lots'"),
    ({"sbatch": {"job-name": "x"}}, "sets this sbatch option itself"),
    ({"sbatch": {"comment": "a\nb"}}, "without line breaks"),
])
def test_a_bad_slurm_table_is_refused_naming_the_key(table, words):
    with pytest.raises(UsageError, match=words.replace("(", r"\(")):
        check_slurm_table(table, "suite.toml")


@pytest.mark.parametrize("item, words", [
    ("nodes=2", "give --nodes-per-job instead"),
    ("Account=lab", "not an sbatch option name"),
    ("comment=a\rb", "without line breaks"),
    ("output=/tmp/x", "sets this sbatch option itself"),
])
def test_a_bad_pass_through_option_exits_2_before_any_slurm_command(item, words, tmp_path, capsys):
    code, _, err = run(["run", "--suite", "smoke", "--results", tmp_path, "--executor", "slurm", "--slurm", item], capsys)
    assert code == 2 and words in err and not (tmp_path / "slurm").exists()


def test_every_slurm_option_is_a_flag_and_a_suite_key():
    flags = {a for action in _parser()._subparsers._group_actions[0].choices["run"]._actions
             for a in action.option_strings}
    for option in SLURM_OPTIONS:
        assert option.flag in flags
        check_slurm_table({option.name: option.default or option.example.strip('"') or 1}, "s")


# The same job through submitit's local executor (no scheduler): training, groups


@pytest.fixture()
def tiny(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def test_a_slurm_job_of_two_tasks_trains_one_group(tiny, tmp_path):
    submitit = pytest.importorskip("submitit")
    spec = load_suite(str(tiny)).runs[1]
    executor = submitit.AutoExecutor(folder=tmp_path / "slurm" / "%j", cluster="local")
    executor.update_parameters(timeout_min=10, tasks_per_node=2)
    jobs = slurm.submit(tmp_path / "r", [spec], Settings("cpu", progress=False), SlurmResources(), executor=executor)
    assert sorted(jobs[0].results()) == ["done", "rank"]  # rank 0 trained and evaluated, rank 1 trained
    assert [s["ranks"] for s in records.read_jsonl(run_dir(tmp_path / "r", spec) / records.SESSIONS)] == [2]
    assert slurm.submitted(tmp_path / "r")[spec.name]["job"] == str(jobs[0].job_id)


# On a real cluster


def _free_port_base() -> int:
    """A base port with the next three free too (the controller, the daemons)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base < 60000 and all(_free(base + i) for i in range(4)):
            return base
    raise RuntimeError("no four free ports in a row")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def cluster():
    """A one-node Slurm cluster for this module (scripts/slurm_cluster.sh), its SLURM_CONF exported. Its folder
    is outside pytest's temporary root: the daemons write their state there while other tests check that
    refused commands leave that root untouched."""
    if shutil.which("sbatch") is None or shutil.which("slurmctld") is None:
        pytest.skip("Slurm is not installed here (sbatch, slurmctld); `bash scripts/slurm_cluster.sh install` "
                    "installs it, as CI does")
    if os.geteuid() != 0:
        pytest.skip("the test cluster's daemons run as root; run the tests as root, or start a cluster yourself")
    folder = Path(tempfile.mkdtemp(prefix="cat-bench-cluster-"))
    env = {**os.environ, "SLURM_CLUSTER_PORT": str(_free_port_base())}
    subprocess.run(["bash", str(SCRIPT), "start", str(folder)], check=True, env=env, capture_output=True)
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(folder / "slurm.conf")
    yield folder
    subprocess.run(["bash", str(SCRIPT), "stop", str(folder)], check=False)
    shutil.rmtree(folder, ignore_errors=True)
    if old is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = old


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "cat_bench.cli", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)


def jobs_of(results: Path) -> dict[str, str]:
    return {run: row["job"] for run, row in slurm.submitted(results).items()}


def wait_until(condition, results: Path, timeout: float = 400, every: float = 2) -> None:
    """Poll every `every` seconds until `condition()` holds; on timeout, fail with the queue and the jobs' logs."""
    end = time.time() + timeout
    while time.time() < end:
        if condition():
            return
        time.sleep(every)
    logs = "\n".join(f"--- {row['log']}\n{_tail(row['log'])}\n{_tail(row['err'])}"
                     for row in slurm.submitted(results).values())
    queue = subprocess.run(["squeue", "-t", "all"], capture_output=True, text=True).stdout
    pytest.fail(f"timed out after {timeout} s\n{queue}\n{logs}")


def _tail(path: str) -> str:
    return "\n".join(Path(path).read_text().splitlines()[-15:]) if Path(path).is_file() else "(no file)"


def squeue_names(job_ids) -> dict[str, str]:
    out = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-o", "%i|%j"], capture_output=True, text=True).stdout
    names = dict(line.split("|", 1) for line in out.splitlines())
    return {job: names.get(job) for job in job_ids}


@pytest.mark.slurm
def test_the_smoke_suite_through_slurm_on_a_cpu_partition_gives_the_local_table(cluster, tmp_path):
    """Two methods of the smoke suite as one job array on the partition without GPUs, each job named
    after its run, give the table the local executor gives with one thread."""
    only = ["--only", "method=natural,at"]
    local = subprocess.Popen([sys.executable, "-m", "cat_bench.cli", "run", "--suite", "smoke", "--results",
                              tmp_path / "local", "--no-progress", *only], env={**os.environ, "OMP_NUM_THREADS": "1"},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    submitted = cli("run", "--suite", "smoke", "--results", tmp_path / "slurm", *only, "--executor", "slurm",
                    "--partition", "cpu", "--cpus-per-task", "1", "--time", "30")
    assert submitted.returncode == 0, submitted.stderr
    assert "no GPU (the partition has none)" in submitted.stderr and "submitted 2 jobs" in submitted.stdout
    jobs = jobs_of(tmp_path / "slurm")
    assert squeue_names(jobs.values()) == {job: run for run, job in jobs.items()}  # one array, named per run
    assert len({job.split("_")[0] for job in jobs.values()}) == 1
    specs = load_suite("smoke").runs
    wait_until(lambda: all(state(tmp_path / "slurm", s) == "done" for s in specs if s.name in jobs), tmp_path / "slurm")
    assert local.wait(timeout=600) == 0, local.communicate()[1]
    table = ["results", "--suite", "smoke", "--format", "csv", "--per-seed", *only, "--results"]
    assert cli(*table, tmp_path / "slurm").stdout == cli(*table, tmp_path / "local").stdout
    status = cli("status", "--suite", "smoke", "--results", tmp_path / "slurm", *only).stdout
    assert all(job in status for job in jobs.values()) and "2 done" in status


@pytest.mark.slurm
def test_a_requeued_job_resumes_without_losing_or_repeating_an_epoch(cluster, tmp_path):
    """`scontrol requeue` in the middle of training: the job comes back, resumes from its checkpoint,
    and ends with one history line per epoch and the uninterrupted run's numbers."""
    only = ["--only", "method=at"]
    tiny = tmp_path / "longer.toml"  # six epochs of a few seconds: the requeue lands in the middle of training
    tiny.write_text(TINY.replace("epochs = 2", "epochs = 6"))
    local = subprocess.Popen([sys.executable, "-m", "cat_bench.cli", "run", "--suite", tiny, "--results",
                              tmp_path / "local", "--no-progress", *only], env={**os.environ, "OMP_NUM_THREADS": "1"},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = tmp_path / "slurm"
    submitted = cli("run", "--suite", tiny, "--results", results, *only, "--executor", "slurm", "--cpus-per-task", "1",
                    "--time", "30")
    assert submitted.returncode == 0, submitted.stderr
    (spec,) = [s for s in load_suite(str(tiny)).runs if s.config["method"] == "at"]
    history = run_dir(results, spec) / records.HISTORY
    wait_until(lambda: history.is_file() and len(records.read_jsonl(history)) >= 1, results, every=0.2)
    job = jobs_of(results)[spec.name]
    requeue = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    assert requeue.returncode == 0, requeue.stderr
    # Slurm keeps a requeued job pending a few minutes before it is eligible again; make it eligible now.
    wait_until(lambda: "PENDING" in slurm.queue_states([job])[job], results, every=0.5)
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
    wait_until(lambda: state(results, spec) == "done", results)
    assert [row["epoch"] for row in records.read_jsonl(history)] == [1, 2, 3, 4, 5, 6]
    starts = [s["start_epoch"] for s in records.read_jsonl(run_dir(results, spec) / records.SESSIONS)]
    assert len(starts) == 2 and starts[0] == 0 and 1 <= starts[1] < 6  # resumed from a checkpoint, not from 0
    assert local.wait(timeout=600) == 0, local.communicate()[1]
    table = ["results", "--suite", tiny, "--format", "csv", "--per-seed", *only, "--results"]
    assert cli(*table, results).stdout == cli(*table, tmp_path / "local").stdout


@pytest.mark.slurm
def test_a_cancelled_task_is_reported_and_only_its_run_is_submitted_again(cluster, tiny, tmp_path):
    results = tmp_path / "r"
    submitted = cli("run", "--suite", tiny, "--results", results, "--executor", "slurm", "--cpus-per-task", "1",
                    "--array-parallelism", "1", "--time", "30")
    assert submitted.returncode == 0, submitted.stderr
    specs = load_suite(str(tiny)).runs
    jobs = jobs_of(results)
    cancelled = specs[1]
    subprocess.run(["scancel", jobs[cancelled.name]], check=True)
    wait_until(lambda: state(results, specs[0]) == "done", results)
    status = cli("status", "--suite", tiny, "--results", results)
    assert f"failed in Slurm: {cancelled.name}: CANCELLED, log {slurm.submitted(results)[cancelled.name]['log']}" \
        in status.stdout
    again = cli("run", "--suite", tiny, "--results", results, "--executor", "slurm", "--cpus-per-task", "1",
                "--slurm", "hold")
    assert again.returncode == 0 and "submitted 1 jobs (1 runs already done" in again.stdout, again.stderr
    new = jobs_of(results)
    assert new[specs[0].name] == jobs[specs[0].name] and new[cancelled.name] != jobs[cancelled.name]
    assert "PENDING (JobHeldUser)" in cli("status", "--suite", tiny, "--results", results).stdout
    subprocess.run(["scancel", new[cancelled.name]], check=True)


@pytest.mark.slurm
def test_a_two_task_job_trains_one_data_parallel_group(cluster, tmp_path):
    """`--gpus-per-job 2` on the fake GPUs: two tasks, one gloo group on the CPU, equal to one process."""
    from test_distributed import TOL, config, max_diff

    from cat_bench.train import train

    cfg = config()
    spec = RunSpec(cfg, ("natural",), 20, ("group",))
    settings = Settings("cpu", progress=False)
    slurm.submit(tmp_path / "r", [spec], settings, SlurmResources(partition="gpu", gpus_per_job=2, cpus_per_task=1,
                                                                  time=30), log=lambda m: None)
    train(cfg, tmp_path / "one", settings, log=lambda m: None)
    wait_until(lambda: state(tmp_path / "r", spec) == "done", tmp_path / "r")
    out = run_dir(tmp_path / "r", spec)
    assert [s["ranks"] for s in records.read_jsonl(out / records.SESSIONS)] == [2]
    assert max_diff(tmp_path / "one", out) < TOL


@pytest.mark.slurm
def test_every_setting_of_the_command_line_reaches_the_job(cluster, tmp_path):
    """The job's pickle (what the task runs) holds the command line's settings, field by field."""
    results = tmp_path / "r"
    done = cli("run", "--suite", "smoke", "--results", results, "--only", "method=at", "--executor", "slurm",
               "--cpus-per-task", "1", "--slurm", "hold", *EVERY_SETTING)
    assert done.returncode == 0, done.stderr
    (row,) = slurm.submitted(results).values()
    pickled = Path(row["log"]).parent / f"{row['job']}_submitted.pkl"
    with open(pickled, "rb") as fh:
        job = pickle.load(fh).function
    subprocess.run(["scancel", row["job"]], check=True)
    expected = every_setting()
    for field in dataclasses.fields(Settings):
        if field.name != "started":  # when the command ran; the job counts its budget from its own start
            assert getattr(job.settings, field.name) == getattr(expected, field.name), field.name
    assert abs(job.settings.started - expected.started) < 120


@pytest.mark.slurm
@pytest.mark.parametrize("argv, words", [
    (["--partition", "nope"], "sbatch refused the jobs: invalid partition specified: nope"),
    (["--partition", "cpu", "--cpus-per-task", "64"], "More processors requested than permitted"),
    (["--partition", "gpu", "--slurm", "gres=gpu:a100:1"], "Requested node configuration is not available"),
])
def test_sbatch_refusals_are_one_line_and_leave_nothing(argv, words, cluster, tmp_path):
    done = cli("run", "--suite", "smoke", "--results", tmp_path, "--only", "method=at", "--executor", "slurm", *argv)
    assert done.returncode == 2 and words in done.stderr
    error = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(error) == 1 and error[0].startswith("cat-bench: error: ")
    assert not (tmp_path / "slurm").exists() or list((tmp_path / "slurm").iterdir()) == []
