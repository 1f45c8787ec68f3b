#!/usr/bin/env bash
# Sets up .venv and runs the whole suite once per Keras backend.
# Slow end-to-end tests (marker `slow`) run in exactly one backend's pass,
# chosen per test file so that every backend runs some of them.
#
# Two lanes for a 2-core machine (a pass keeps about one core busy: XLA
# compiles and small eager ops are single-threaded): the JAX pass, the
# longest, prints as it runs; beside it the TensorFlow pass then the torch
# pass write logs that are printed whole once both lanes are done. Each pass
# has its own pytest temporary directory.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../.ci/venv.sh"
# venv.sh sets -e; a failing backend must not skip the ones after it.
set +e
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

run_pass() {
    local backend=$1
    shift
    KERAS_BACKEND=$backend python -m pytest -q -p no:cacheprovider --durations=25 \
        --basetemp="$work/tmp-$backend" tests "$@"
    echo $? >"$work/$backend.code"
}

(run_pass tensorflow "$@" >"$work/tensorflow.log" 2>&1
 run_pass torch "$@" >"$work/torch.log" 2>&1) &
echo "=== KERAS_BACKEND=jax ==="
run_pass jax "$@"
wait
for backend in tensorflow torch; do
    echo "=== KERAS_BACKEND=$backend ==="
    cat "$work/$backend.log"
done
status=0
for backend in jax tensorflow torch; do
    code=$(cat "$work/$backend.code" 2>/dev/null || echo "no exit code")
    if [ "$code" != 0 ]; then
        echo "pytest on $backend exited with $code (5 = no tests ran)"
        status=1
    fi
done
exit $status
