#!/usr/bin/env bash
# Install everything, then run the whole test suite: lint, types, viewer type check and unit
# tests, pytest.
# pytest's exit code 5 (no tests collected) fails the run like any other failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "==> ruff"
.venv/bin/ruff check tileserver annot tests bench
.venv/bin/ruff format --check tileserver annot
echo "==> mypy"
.venv/bin/mypy
echo "==> viewer type check"
(cd viewer && npm run --silent typecheck)
echo "==> viewer unit tests"
# vitest fails on a failing test and on a run that finds none (passWithNoTests is off).
(cd viewer && npm test --silent)
echo "==> pytest"
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit "$status"
