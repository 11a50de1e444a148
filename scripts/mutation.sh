#!/usr/bin/env bash
# Mutation testing of the certification core with mutmut (slow: not part of the default suite).
#
#   scripts/mutation.sh                                        every module in [tool.mutmut]
#   scripts/mutation.sh 'unicr_pl.radius.neyman_pearson.*'     one module (mutmut name globs)
#
# It runs on a copy of the tree in $MUTATION_DIR (default: a new directory under /tmp), so the
# working tree is never touched; rerunning with the same MUTATION_DIR resumes. Only the covering
# tests listed in pyproject.toml run against each mutant; MUTATION_TESTS="tests/a.py tests/b.py"
# runs only those (faster; a smaller selection can only kill fewer mutants, so the score it
# gives is a lower bound). Needs `pip install -e '.[mutation]'`.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python}
WORK=${MUTATION_DIR:-$(mktemp -d /tmp/unicr-mutation.XXXXXX)}
mkdir -p "$WORK"
for item in unicr_pl tests docs callbacks configs certify.py train.py pyproject.toml; do
    [ -e "$WORK/$item" ] || cp -r "$ROOT/$item" "$WORK/$item"
done
cd "$WORK"
if [ -n "${MUTATION_TESTS:-}" ]; then
    "$PYTHON" - "$MUTATION_TESTS" <<'PY'
import re
import sys
tests = ", ".join(f'"{t}"' for t in sys.argv[1].split())
text = open("pyproject.toml").read()
text = re.sub(r"pytest_add_cli_args_test_selection = \[[^\]]*\]",
              f"pytest_add_cli_args_test_selection = [{tests}]", text)
open("pyproject.toml", "w").write(text)
PY
fi
export UNICR_CACHE="$WORK/.cache" WANDB_MODE=disabled MPLBACKEND=Agg OMP_NUM_THREADS=1
echo "mutation run in $WORK"
"$PYTHON" -m mutmut run --max-children "${MUTATION_JOBS:-1}" "$@" || true
"$PYTHON" -m mutmut results --all true > results.txt 2>&1 || "$PYTHON" -m mutmut results > results.txt
"$PYTHON" - <<'PY'
import re
from collections import Counter
text = open("results.txt").read()
status = Counter(m.group(2) for m in re.finditer(r"^\s*(\S+): (\w+)", text, re.M))
killed, survived = status.get("killed", 0), status.get("survived", 0)
total = killed + survived
print(dict(status))
if total:
    print(f"score: {killed}/{total} killed = {100 * killed / total:.1f}% (timeouts etc. not counted)")
PY
echo "survivors: grep survived $WORK/results.txt; show one: cd $WORK && $PYTHON -m mutmut show NAME"
