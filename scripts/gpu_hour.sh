#!/usr/bin/env bash
# One GPU hour: check that everything works on the GPU, measure its speed, then spend the rest of the
# hour on the paper's MNIST table, in steps of less than 9 minutes that survive the slot ending.
#
#   bash scripts/gpu_hour.sh OUT_DIR start      # install offline, doctor, then benchmarks and the mnist
#                                               # suite detached (returns after the doctor)
#   bash scripts/gpu_hour.sh OUT_DIR collect    # wait up to COLLECT_MINUTES (8) for the detached work,
#                                               # pack the records into OUT_DIR, write OUT_DIR/next.sh
#   bash scripts/gpu_hour.sh OUT_DIR table1     # Table 1's rows not yet reproduced, one process per row packed
#                                               # on the GPU, in the foreground under SUITE_MINUTES (5), then
#                                               # their records and checkpoints packed to carry to the next GPU
#   bash scripts/gpu_hour.sh OUT_DIR tiny       # every step in the foreground on the CPU, tiny (CI)
#
# Before (here, with a package index): bash scripts/fetch_wheels.sh  (fills wheelhouse/), and copy
# genuine MNIST into data-cache/MNIST/raw. Carry wheelhouse/ and data-cache/ with the working tree.
# Settings (environment): BENCH_ARCHS (preact-resnet18 wrn-34-10 smallcnn:mnist: the networks (c)
# measures, ARCH or ARCH:DATASET; the suite's plan prices each measured network at its rate),
# BENCH_ARGS (more options of benchmarks/throughput.py), SUITE (mnist), ONLY (seed=0: one seed per
# row first), JOBS_PER_GPU (4),
# SUITE_MINUTES (40: the suite's wall-clock budget; rerun `start` or next.sh to continue),
# CAT_BENCH_DATA (data-cache), RUNS (gpu-runs: the suite's results, kept between calls).
# OUT_DIR gets at most five files: doctor.md, doctor.json, throughput.md, records.tar.gz, next.sh.
# `table1` (docs/gpu.md, "Finishing Table 1 on the GPU"): ONLY (seed=0 method=cat-cent,cat-cw: the CAT rows;
# then seed=0 method=at,trades), DONE_FROM (results/table1/runs: rows finished elsewhere are not retrained),
# COMPILE (auto: reduce-overhead where the doctor's "cuda graphs" check passes, else eager; or none), and
# OUT_DIR gets doctor-graphs.md, records.tar.gz, table1.md (seconds per epoch per run), state/RUN.tar
# (each run's records and checkpoints: carry them back as RUNS/runs/RUN to resume) and next.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/gpu_hour.sh OUT_DIR start|collect|tiny}
step=${2:-start}
suite=${SUITE:-mnist}
only=${ONLY:-seed=0}
jobs=${JOBS_PER_GPU:-4}
minutes=${SUITE_MINUTES:-40}
runs=${RUNS:-gpu-runs}
data=${CAT_BENCH_DATA:-data-cache}
site=${SITE:-/tmp/cat-bench-site}
bench_archs=${BENCH_ARCHS:-preact-resnet18 wrn-34-10 smallcnn:mnist}
mkdir -p "$out" "$runs"
log() { echo "[gpu_hour $(date +%H:%M:%S)] $*" >&2; }

use_site() {  # import the copy installed in $site first
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  export PYTHONSAFEPATH=1  # the checkout's cat_bench/ (without methods/, which installs into it) must not shadow it
}

install() {  # (a) offline: the wheels and cat-bench itself into $site, first on PYTHONPATH
  if [ ! -d wheelhouse ]; then
    log "no wheelhouse/: run scripts/fetch_wheels.sh where a package index is reachable"; return 1
  fi
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$site" wheelhouse/*.whl
  PYTHONPATH="$site" python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile \
    --upgrade --target "$site" .
  use_site
  # the copy in $site imports on its own (an editable install of a development checkout would shadow it)
  python3 - "$site" "${1:-full}" <<'PY'
import sys
sys.meta_path = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")]
import submitit, cat_bench.methods  # noqa: E401
if sys.argv[2] != "light":  # training alone (table1) needs neither AutoAttack nor RobustBench
    import pyautoattack  # noqa: F401
    from cat_bench.robustbench_compat import import_robustbench
    import_robustbench()
assert cat_bench.__file__.startswith(sys.argv[1]), cat_bench.__file__
print("installed offline:", cat_bench.__file__)
PY
}

doctor() {  # (b)
  python3 -m cat_bench.cli doctor --json "$out/doctor.json" "$@" > "$out/doctor.md"
}

benchmarks() {  # (c) cat-bench against the authors-style eager loop, every precision and compile mode
  : > "$out/throughput.md"
  for entry in "$@"; do  # ARCH or ARCH:DATASET (default dataset: BENCH_DATASET, else cifar10)
    arch=${entry%%:*}; dataset=${BENCH_DATASET:-cifar10}
    [ "$entry" = "$arch" ] || dataset=${entry#*:}
    python3 benchmarks/throughput.py --dataset "$dataset" --synthetic --arch "$arch" ${BENCH_ARGS:-} \
      --record "$runs/throughput-$arch.json" >> "$out/throughput.md"
  done
}

suite_run() {  # (d) the suite, packed K runs per GPU, under the wall-clock budget
  python3 -m cat_bench.cli run --suite "$suite" --only $only --results "$runs" --data-root "$data" --dry-run \
    > "$runs/plan.txt"  # priced with the benchmark records in $runs (throughput-*.json) where they exist
  python3 -m cat_bench.cli run --suite "$suite" --only $only --results "$runs" --data-root "$data" \
    --jobs-per-gpu "$jobs" --stop-after-minutes "$minutes" --no-progress "$@" || true
}

collect() {  # (e) pack the records (never checkpoints) and write the commands for the next hour
  tar czf "$out/records.tar.gz" --exclude='*.pt' --exclude='*.lock' --exclude='checkpoints' "$runs"
  python3 -m cat_bench.cli status --suite "$suite" --only $only --results "$runs" > "$runs/status.txt" || true
  {
    echo "# What remains of suite $suite ($only) after this hour; run where the records are:"
    echo "tar xzf records.tar.gz   # the records; checkpoints stay on the GPU machine"
    if grep -qE ' (partial|todo|failed) ' "$runs/status.txt"; then
      echo "SUITE=$suite ONLY='$only' SUITE_MINUTES=$minutes bash scripts/gpu_hour.sh OUT_DIR start"
      echo "# or directly: cat-bench run --suite $suite --only $only --results $runs --jobs-per-gpu $jobs" \
           "--stop-after-minutes $minutes"
    else
      echo "# every run of this selection is done; next: ONLY='seed=1 seed=2' (the other seeds), then the CIFAR suites"
    fi
    cat "$runs/status.txt" | sed 's/^/# /'
  } > "$out/next.sh"
  log "packed into $out: $(ls "$out" | tr '\n' ' ')"
}

seed_done() {  # rows finished elsewhere (their records: done and eval.json) count as done here
  local from=${DONE_FROM-results/table1/runs}
  [ -n "$from" ] && [ -d "$from" ] || return 0
  mkdir -p "$runs/runs"
  for d in "$from"/*/; do
    name=$(basename "$d")
    if [ -f "$d/done" ] && [ -f "$d/eval.json" ] && [ ! -e "$runs/runs/$name" ]; then
      cp -r "$d" "$runs/runs/$name"
      log "$name: finished in $from, not trained here"
    fi
  done
}

compile_flag() {  # CUDA graphs only where the doctor finds them exact on this GPU
  case "${COMPILE:-auto}" in
    none) ;;
    auto)
      if python3 -m cat_bench.cli doctor --only "cuda graphs" --json "$out/doctor-graphs.json" > "$out/doctor-graphs.md" \
         && grep -q '| cuda graphs | pass |' "$out/doctor-graphs.md"; then
        echo "--compile reduce-overhead"
      fi ;;
    *) echo "--compile $COMPILE" ;;
  esac
}

table1_run() {  # every selected row not finished, one process each, under the budget; "$@": more run options
  seed_done
  local flag
  flag=$(compile_flag)
  log "table1: ${flag:-eager}; $(python3 -m cat_bench.cli status --suite "$suite" --only $only --results "$runs" | tail -1)"
  python3 -m cat_bench.cli run --suite "$suite" --only $only --results "$runs" --data-root "$data" \
    --jobs-per-gpu "$jobs" --no-progress $flag "$@" || true
}

table1_pack() {  # records to commit; each run's records and checkpoints to carry to the next GPU; the costs
  collect
  mkdir -p "$out/state"
  for d in "$runs"/runs/*/; do
    [ -d "$d/checkpoints" ] && [ ! -f "$d/done" ] && tar cf "$out/state/$(basename "$d").tar" -C "$runs/runs" --exclude='*.lock' "$(basename "$d")"
  done
  python3 - "$runs/runs" > "$out/table1.md" <<'PY'
import json, sys
from pathlib import Path

print("| run | method | eps_train | epochs trained | s per epoch (training) | s per epoch (with selection) | images/s | device |")
print("|---|---|---|---|---|---|---|---|")
for run in sorted(p for p in Path(sys.argv[1]).iterdir() if (p / "history.jsonl").is_file()):
    config = json.loads((run / "config.json").read_text())
    rows = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines() if line.strip()]
    ident, hw = config["identity"], config["provenance"]["hardware"]
    n = len(rows) or 1
    print(f"| {run.name} | {ident['method']} | {ident['eps']:g} | {len(rows)} | "
          f"{sum(r['train_seconds'] for r in rows) / n:.1f} | {sum(r['seconds'] for r in rows) / n:.1f} | "
          f"{sum(r['images_per_s'] for r in rows) / n:.0f} | {hw.get('gpu') or hw.get('cpu')} |")
PY
  {
    echo "# To resume on the next GPU: unpack the carried state into RUNS/runs, then run the same step"
    echo "mkdir -p $runs/runs && for f in OUT/state/*.tar; do tar xf \"\$f\" -C $runs/runs; done"
    echo "ONLY='$only' SUITE_MINUTES=$minutes bash scripts/gpu_hour.sh OUT_DIR table1   # carry: wheelhouse data $runs"
  } >> "$out/next.sh"
  log "table1 packed: $(ls "$out/state" | wc -l) run state(s), $(du -sh "$out/state" | cut -f1)"
}

case "$step" in
  start)
    install
    doctor || log "the doctor reports failures (doctor.md); the hour goes on"
    log "doctor: $(tail -1 "$out/doctor.md")"
    rm -f "$runs/.finished"
    export PYTHONPATH BENCH_ARCHS="$bench_archs" SUITE="$suite" ONLY="$only" JOBS_PER_GPU="$jobs" SUITE_MINUTES="$minutes" RUNS="$runs" \
      CAT_BENCH_DATA="$data"
    setsid nohup bash "$0" "$out" background > "$runs/background.log" 2>&1 < /dev/null &
    log "benchmarks and suite started detached (log $runs/background.log); collect with: $0 $out collect"
    ;;
  background)  # started by `start`, in a session of its own so it outlives the call
    benchmarks $bench_archs
    suite_run
    touch "$runs/.finished"
    ;;
  collect)
    use_site  # the copy `start` installed
    waited=0
    while [ ! -e "$runs/.finished" ] && [ "$waited" -lt "$((60 * ${COLLECT_MINUTES:-8}))" ]; do
      sleep 15; waited=$((waited + 15))
    done
    [ -e "$runs/.finished" ] && log "the detached work has finished" || log "still running: collecting what is there"
    collect
    ;;
  table1)  # Table 1's rows not yet reproduced, in the foreground
    install light
    only=${ONLY:-seed=0 method=cat-cent,cat-cw}; jobs=${JOBS_PER_GPU:-3}; minutes=${SUITE_MINUTES:-5}
    table1_run --stop-after-minutes "$minutes"
    table1_pack
    ;;
  tiny)  # CI: every step on the CPU with synthetic data, one epoch, K=2, a one-minute budget
    install
    doctor --device cpu
    log "doctor: $(tail -1 "$out/doctor.md")"
    BENCH_DATASET=mnist-mini BENCH_ARGS="--device cpu --batches 1 --eval-n 20 --variants fp32" benchmarks smallcnn
    suite=smoke; only=seed=0; jobs=2; minutes=1
    suite_run --device cpu
    collect
    packed=$(tar tzf "$out/records.tar.gz")  # listed whole: `| grep -q` would end tar with SIGPIPE under pipefail
    grep -q 'history.jsonl' <<< "$packed" || { log "no training records were packed"; exit 1; }
    # table1, tiny: two smoke rows stopped after epoch 1, packed, unpacked in a fresh results folder as on the
    # next GPU, and finished there from their checkpoints
    runs=$runs/table1-tiny; out=$out/table1; only="seed=0 method=natural,at"; jobs=2
    rm -rf "$runs" "$out"; mkdir -p "$runs" "$out"
    DONE_FROM= table1_run --device cpu --stop-after-epoch 1
    table1_pack
    [ "$(ls "$out/state" | wc -l)" = 2 ] || { log "table1: expected 2 packed run states"; exit 1; }
    runs=$runs-next; rm -rf "$runs"; mkdir -p "$runs/runs"
    for f in "$out"/state/*.tar; do tar xf "$f" -C "$runs/runs"; done
    DONE_FROM= table1_run --device cpu
    for d in "$runs"/runs/*/; do
      starts=$(python3 -c "import json,sys; print(' '.join(str(json.loads(l)['start_epoch']) for l in open(sys.argv[1])))" "$d/sessions.jsonl")
      [ -f "$d/done" ] && [ "$starts" = "0 1" ] || { log "table1: $d did not resume after epoch 1 ($starts)"; exit 1; }
    done
    log "table1 tiny: two rows stopped after epoch 1, carried, resumed and finished"
    ;;
  *)
    echo "usage: scripts/gpu_hour.sh OUT_DIR start|collect|tiny" >&2; exit 2 ;;
esac
