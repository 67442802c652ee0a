#!/usr/bin/env bash
# Set up .venv if needed, then run the whole test suite (tests on ../shared/data skip if it is absent).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider tests "$@"
