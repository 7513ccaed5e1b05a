#!/usr/bin/env bash
# Quick start 2: set up and run the test suite (CPU; 8 fake devices for the sharding tests).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
pip install -q -e '.[test]'
python -m pytest -q --durations=10 "$@"
