#!/usr/bin/env bash
# The README's main job: sets up .venv, then pre-trains a tiny SLAM model on
# the bundled sample corpus, fine-tunes it for CTC ASR and evaluates it.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../.ci/venv.sh"
KERAS_BACKEND="${KERAS_BACKEND:-jax}" python -m recipes.main "$@"
