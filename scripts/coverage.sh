#!/usr/bin/env bash
# Line coverage of the library over the default test suite, per package.
#
#   bash scripts/coverage.sh                      # the default suite (same selection as `pytest`)
#   bash scripts/coverage.sh tests/cli -x         # any pytest arguments
#   LARGEKERNEL_COVERAGE_APPEND=1 bash scripts/coverage.sh tests/data/test_x.py
#                                                 # add a run to the previous data (union of lines)
#
# Configuration: .coveragerc (or [tool.coverage.*] in pyproject.toml): source = largekernel,
# parallel data files, subprocesses measured via coverage's `patch = subprocess` (coverage >= 7.10),
# multiprocessing children via `concurrency = multiprocessing`.
# Data and reports go to build/coverage/ (override with LARGEKERNEL_COVERAGE_DIR); the script prints
# `coverage report` per file, then a per-package table, and exits with pytest's exit status.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${LARGEKERNEL_COVERAGE_DIR:-build/coverage}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
if [ "${LARGEKERNEL_COVERAGE_APPEND:-0}" = 1 ]; then
    rm -f "$OUT"/.coverage.*  # leftovers of an interrupted run; the combined .coverage stays
    append=--append
else
    rm -f "$OUT"/.coverage "$OUT"/.coverage.*
    append=
fi
# absolute, so subprocesses that run in a temporary directory write their data here too
export COVERAGE_FILE="$OUT/.coverage"
# the configuration ([run] source/parallel/patch/concurrency) is found by coverage itself
# (.coveragerc, else [tool.coverage.*] in pyproject.toml); subprocesses get it from coverage's
# `patch = subprocess` (COVERAGE_PROCESS_CONFIG), whatever their working directory

python -m coverage run -m pytest -p no:cacheprovider "$@"
status=$?

python -m coverage combine --quiet $append "$OUT"
python -m coverage report > "$OUT/report.txt"
python -m coverage json --quiet -o "$OUT/coverage.json"
cat "$OUT/report.txt"
echo
python - "$OUT/coverage.json" <<'PY'
"""Aggregate coverage.json per package of largekernel (top-level modules as one row)."""
import collections
import json
import pathlib
import sys

files = json.loads(pathlib.Path(sys.argv[1]).read_text())["files"]
rows = collections.defaultdict(lambda: [0, 0])  # package -> [statements, covered]
for name, data in files.items():
    parts = pathlib.PurePath(name).parts
    inner = parts[parts.index("largekernel") + 1:]
    package = inner[0] if len(inner) > 1 else "(top-level modules)"
    rows[package][0] += data["summary"]["num_statements"]
    rows[package][1] += data["summary"]["covered_lines"]
print(f"| package | statements | covered | line coverage |")
print(f"|---|---:|---:|---:|")
for package, (statements, covered) in sorted(rows.items()):
    print(f"| `{package}` | {statements} | {covered} | {100 * covered / max(statements, 1):.0f} % |")
statements = sum(r[0] for r in rows.values())
covered = sum(r[1] for r in rows.values())
print(f"| **total** | {statements} | {covered} | {100 * covered / statements:.0f} % |")
PY
exit $status
