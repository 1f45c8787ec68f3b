# Sourced by the README's commands: creates .venv (Python 3.11) if missing and
# installs keras-slam with the torch, hf and test extras from pyproject.toml.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x .venv/bin/python ]; then
    python3.11 -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
fi
.venv/bin/python -m pip install -q -e ".[torch,hf,test]"
# espeak-ng is only needed to regenerate the sample corpus (tfrecords/sample).
export PATH="$PWD/.venv/bin:$PATH"
