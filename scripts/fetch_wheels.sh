#!/usr/bin/env bash
# Download, here (with a package index), the wheels cat-bench needs on a GPU machine without network
# whose image already has torch, torchvision, numpy, pandas, matplotlib, jinja2, rich,
# tabulate, pyyaml, requests, tqdm and timm: pyautoattack, submitit, platformdirs and the robustbench
# extra. scripts/gpu_hour.sh installs them from there with --no-index.
#
#   bash scripts/fetch_wheels.sh [DIR] [PYTHON_VERSION]     # defaults: wheelhouse, 3.12
#
# DIR is git-ignored (wheelhouse/); carry it to the GPU machine beside the working tree. Every
# package listed is pure Python, so one set serves any x86-64 or Arm Linux of that Python version.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-wheelhouse}
python_version=${2:-3.12}
mkdir -p "$dir"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$python_version" -d "$dir" \
  pyautoattack==0.2.0 submitit==1.5.4 cloudpickle typing_extensions platformdirs \
  robustbench==1.1.1 geotorch==0.4.0 gdown==5.1.0 beautifulsoup4 soupsieve torchdiffeq "setuptools<81"

ls "$dir"
du -sh "$dir"
