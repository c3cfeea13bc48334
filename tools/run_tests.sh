#!/usr/bin/env bash
# Sets up .venv with the test requirements (see tools/setup_env.sh) and runs the test
# suite. Extra arguments go to pytest, e.g. `bash tools/run_tests.sh -k shapes`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh --test
exec .venv/bin/python -m pytest tests -q "$@"
