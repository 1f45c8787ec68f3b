#!/usr/bin/env bash
# Sets up .venv and runs the whole suite once per Keras backend.
# Slow end-to-end tests (marker `slow`) run in exactly one backend's pass,
# chosen per test file so that every backend runs some of them.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../.ci/venv.sh"
# venv.sh sets -e; a failing backend must not skip the ones after it.
set +e
status=0
for backend in jax tensorflow torch; do
    echo "=== KERAS_BACKEND=$backend ==="
    KERAS_BACKEND=$backend python -m pytest -q -p no:cacheprovider --durations=25 tests "$@"
    code=$?
    if [ $code -ne 0 ]; then
        echo "pytest on $backend exited with $code (5 = no tests ran)"
        status=1
    fi
done
exit $status
