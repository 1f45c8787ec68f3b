"""Parity worker: runs builders on another backend for `assert_backend_parity`.

Started once per pytest session by the `parity_worker` fixture with
KERAS_BACKEND set to the other backend. Reads one JSON request per line on
stdin: {"builder", "weights", "inputs", "outputs"}; builds the object, loads
the weights, runs the call function, writes the outputs to an npz file and
answers one JSON line {"ok": true} or {"ok": false, "error": traceback}.
"""

import json
import sys
import traceback

import numpy as np

from tests import test_case


def handle(request):
    with np.load(request["inputs"]) as data:
        inputs = {key: data[key] for key in data.files}
    obj, call_fn = test_case.build_case(request["builder"], inputs)
    test_case.load_weights(obj, request["weights"])
    outputs = test_case.normalize_outputs(call_fn(inputs))
    arrays = {}
    for name, (array, mask) in outputs.items():
        arrays[name] = array
        if mask is not None:
            arrays[name + "/mask"] = mask
    np.savez(request["outputs"], **arrays)


def main():
    for line in sys.stdin:
        try:
            handle(json.loads(line))
            answer = {"ok": True}
        except Exception:
            answer = {"ok": False, "error": traceback.format_exc()}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
