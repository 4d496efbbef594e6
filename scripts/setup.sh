#!/usr/bin/env bash
# One-time set-up, safe to re-run: a project-local virtualenv with the
# PyTorch wheel that tch 0.26 expects (torch==2.13.0; the Linux wheel brings
# ~5 GB of CUDA libraries that libtorch_cpu.so links against — expected).
# Afterwards `. ./env.sh` points cargo at it (LIBTORCH_USE_PYTORCH=1), and
# the built binaries carry an rpath to its torch/lib.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_VERSION=2.13.0

if ! command -v cargo >/dev/null; then
    echo "setup: cargo not found; install Rust from https://rustup.rs first" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    python3 -m venv .venv
fi
have=$(.venv/bin/python -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null || true)
if [ "$have" != "$TORCH_VERSION" ]; then
    echo "setup: installing torch==$TORCH_VERSION into .venv (about a minute, ~5 GB)"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check "torch==$TORCH_VERSION"
fi
echo "setup: torch $(.venv/bin/python -c 'import torch; print(torch.__version__)') ready in .venv"
# Real clients for the tests of `ecomap serve` (tests/python/): Triton's HTTP
# client, the Prometheus/OpenMetrics parser, the HdrHistogram log reader.
TEST_PKGS=("tritonclient[http]==2.73.0" "prometheus_client==0.26.0" "hdrhistogram==0.10.8" "numpy==2.4.6")
if ! .venv/bin/python -c 'import tritonclient.http, prometheus_client, hdrh, numpy' 2>/dev/null; then
    echo "setup: installing the serve tests' Python clients into .venv"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check "${TEST_PKGS[@]}"
fi
# The robot perception stack (workloads/perception.ron): torchvision's
# detection, segmentation and int8 classification models as TorchScript,
# random weights, nothing downloaded (scripts/export_models.py, ~20 s).
TORCHVISION_VERSION=0.28.0
if ! .venv/bin/python -c "import torchvision, sys; sys.exit(torchvision.__version__.split('+')[0] != '$TORCHVISION_VERSION')" 2>/dev/null; then
    echo "setup: installing torchvision==$TORCHVISION_VERSION into .venv"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check "torchvision==$TORCHVISION_VERSION"
fi
if [ ! -f models/.exported-v1 ]; then
    echo "setup: exporting the perception models into models/"
    .venv/bin/python scripts/export_models.py models
    touch models/.exported-v1
fi
