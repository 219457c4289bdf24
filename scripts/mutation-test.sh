#!/usr/bin/env bash
# Mutation testing of the core modules with mutmut 3 (issue 20).
#
# Usage:
#   scripts/mutation-test.sh                      # every core module listed in [tool.mutmut]
#   scripts/mutation-test.sh src/largekernel/ops/cropping.py -- tests/ops/test_cropping.py
#                                                 # one module, with a narrower test selection
# Environment:
#   MUTMUT_CHILDREN  parallel mutant workers (default: 2)
#   MUTMUT_WORKDIR   scratch directory (default: a fresh mktemp -d; kept so results can be browsed)
#   MUTMUT_CONFIG    a TOML file with a [tool.mutmut] table to use instead of pyproject.toml's
#
# mutmut writes a mutants/ tree next to the sources, so it runs in a scratch copy of the
# repository: the working tree stays clean and other work on it does not disturb the run.
# The [tool.mutmut] table of pyproject.toml is the configuration; positional arguments override
# its only_mutate list and (after "--") its test selection.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="${MUTMUT_WORKDIR:-$(mktemp -d -t largekernel-mutmut.XXXXXX)}"
children="${MUTMUT_CHILDREN:-2}"

modules=()
tests=()
seen_sep=0
for arg in "$@"; do
    if [[ "$arg" == "--" ]]; then seen_sep=1; continue; fi
    if (( seen_sep )); then tests+=("$arg"); else modules+=("$arg"); fi
done

mkdir -p "$work"
rm -rf "$work/src" "$work/tests" "$work/mutants"
cp -a "$repo/src" "$repo/tests" "$repo/pyproject.toml" "$work/"
find "$work/src" "$work/tests" -name __pycache__ -prune -exec rm -rf {} +
# tests/conftest.py finds the shared fixtures next to the repository; mutmut runs in
# $work/mutants, so point $work/shared at the real ones
if [[ -d "$repo/../shared" && ! -e "$work/shared" ]]; then ln -s "$(cd "$repo/../shared" && pwd)" "$work/shared"; fi

if [[ -n "${MUTMUT_CONFIG:-}" ]]; then
    # drop the original table (if any) so the given one wins
    python - "$work/pyproject.toml" "$MUTMUT_CONFIG" <<'PY'
import re
import sys

text = open(sys.argv[1], encoding="utf-8").read()
text = re.sub(r"\n\[tool\.mutmut\]\n.*?(?=\n\[|\Z)", "\n", text, flags=re.S)
open(sys.argv[1], "w", encoding="utf-8").write(text + "\n" + open(sys.argv[2], encoding="utf-8").read())
PY
fi

python - "$work/pyproject.toml" "${#modules[@]}" "${modules[@]}" "${tests[@]}" <<'PY'
"""Rewrite [tool.mutmut] in the scratch pyproject.toml when modules/tests were given."""
import sys
import tomllib

path, n = sys.argv[1], int(sys.argv[2])
modules, tests = sys.argv[3:3 + n], sys.argv[3 + n:]
text = open(path, encoding="utf-8").read()
if "mutmut" not in tomllib.loads(text).get("tool", {}):
    sys.exit("pyproject.toml has no [tool.mutmut] table (see /work/readme_parts/mutmut_config.toml)")
if modules or tests:
    lines, out, skip = text.splitlines(), [], False
    for line in lines:
        key = line.split("=")[0].strip()
        if skip:
            skip = not line.rstrip().endswith("]")
            continue
        if (modules and key == "only_mutate") or (tests and key == "pytest_add_cli_args_test_selection"):
            skip = not line.rstrip().endswith("]")
            continue
        out.append(line)
        if line.strip() == "[tool.mutmut]":
            if modules:
                out.append("only_mutate = [" + ", ".join(repr(m) for m in modules).replace("'", '"') + "]")
            if tests:
                out.append("pytest_add_cli_args_test_selection = ["
                           + ", ".join(repr(t) for t in tests).replace("'", '"') + "]")
    open(path, "w", encoding="utf-8").write("\n".join(out) + "\n")
PY

cd "$work"
echo "mutmut scratch copy: $work" >&2
nice -n 10 mutmut run --max-children "$children" || true
mutmut results --all true > "$work/mutmut-results.txt" || mutmut results > "$work/mutmut-results.txt"
python - "$work/mutmut-results.txt" <<'PY'
"""Print the kill rate per module from `mutmut results`."""
import collections
import re
import sys

counts = collections.defaultdict(collections.Counter)
for line in open(sys.argv[1], encoding="utf-8"):
    if ":" not in line:
        continue
    name, status = (part.strip() for part in line.rsplit(":", 1))
    # mutant names look like pkg.module.x_function__mutmut_3 or pkg.module.xǁClassǁmethod__mutmut_3
    module = re.split(r"\.x(?:_|ǁ)", name, maxsplit=1)[0]
    counts[module][status] += 1
for module, c in sorted(counts.items()):
    total = sum(c.values())
    killed = c.get("killed", 0)
    print(f"{module}: {killed}/{total} killed ({100 * killed / max(total, 1):.1f} %), {dict(c)}")
PY
echo "survivors: cd $work && mutmut show <name>" >&2
