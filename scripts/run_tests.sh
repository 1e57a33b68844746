#!/usr/bin/env bash
# make test's two pytest runs, side by side so that both cores work (most tests compute on one thread):
#  - nbval over the project's notebooks (not a user's out.ipynb), in order in one process: 03 and 04 read the run 02
#    wrote; its report is printed after the tests';
#  - the tests on TEST_JOBS pytest-xdist workers, a test file per worker (module fixtures are built once).
# Exit status: non-zero when either run failed.
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
"$PY" -m pytest -q -p no:cacheprovider --nbval-lax --nbval-cell-timeout=1200 notebooks/[0-9][0-9]_*.ipynb \
  > "$log" 2>&1 < /dev/null &
nbval=$!
start=$SECONDS
"$PY" -m pytest -q -p no:cacheprovider --durations=15 -n "${TEST_JOBS:-2}" --dist loadfile tests < /dev/null
tests=$?
echo "--- tests: exit $tests after $(( SECONDS - start )) s; waiting for nbval over notebooks/ (run beside them)"
wait "$nbval"
notebooks=$?
cat "$log"
echo "--- nbval: exit $notebooks; both runs done after $(( SECONDS - start )) s"
exit $(( tests != 0 || notebooks != 0 ))
