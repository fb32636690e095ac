#!/usr/bin/env bash
# Run the whole test suite: lint, types, import rules, unit and end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")"
./install.sh --test
.venv/bin/ruff check kubling tests bench
.venv/bin/mypy kubling
exec .venv/bin/python -m pytest -q "$@"
