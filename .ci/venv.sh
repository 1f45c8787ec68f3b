# Sourced by the README's commands: creates .venv (Python 3.11) if missing and
# installs keras-slam with the torch, hf, test, sample and orbax extras from pyproject.toml.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x .venv/bin/python ]; then
    python3.11 -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
fi
.venv/bin/python -m pip install -q -e ".[torch,hf,test,sample,orbax]"
# The sample extra (espeak-ng as a pip wheel) speaks larger corpora (keras-slam
# synth-corpus); only regenerating the committed tfrecords/sample needs apt.
export PATH="$PWD/.venv/bin:$PATH"
