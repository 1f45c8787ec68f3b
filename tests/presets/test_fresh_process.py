"""Presets load in a new process that imports only what the README imports."""

import json
import os
import re
import subprocess
import sys

from keras_slam.data.tokenizers import CharacterTokenizer, build_character_vocabulary
from keras_slam.models import SLAMBackbone, SpeechRecognizer
from keras_slam.models.asr_preprocessor import SpeechRecognizerPreprocessor
from keras_slam.models.slam_backbone_presets import backbone_presets
from tests import test_case
from tests.conftest import REPO_ROOT

TEXTS = ["hello world", "keras slam"]


def readme_first_look():
    """The code block of the README's "A first look" section."""
    with open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8") as file:
        readme = file.read()
    match = re.search(r"## A first look\s+```python\n(.*?)```", readme, re.S)
    assert match, "README.md has no python block under '## A first look'"
    return match.group(1)


def run_fresh(code, cwd):
    """Runs `code` in a new Python process on this backend; returns its stdout."""
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_readme_first_look_runs_in_a_new_process(tmp_path):
    """The README block as written; only `fit` is left out (it needs a dataset)."""
    lines = [line for line in readme_first_look().splitlines() if ".fit(" not in line]
    code = "\n".join(lines + ["print(recognizer.vocabulary_size)"])
    output = run_fresh(code, cwd=tmp_path)
    assert int(output.split()[-1]) == backbone_presets["slam_tiny"].config["vocabulary_size"]


def test_presets_with_a_tokenizer_load_after_the_readme_imports(tmp_path):
    """A backbone preset with a tokenizer (as recipes/main.py writes it) and a
    recognizer preset load where only the README's import lines ran."""
    tokenizer = CharacterTokenizer(build_character_vocabulary(TEXTS), sequence_length=16)
    config = backbone_presets["slam_tiny"].config
    backbone = SLAMBackbone(**{**config, "vocabulary_size": tokenizer.vocabulary_size()})
    backbone_preset, recognizer_preset = str(tmp_path / "pretrained"), str(tmp_path / "recognizer")
    tokenizer.save_to_preset(backbone_preset)
    backbone.save_to_preset(backbone_preset)
    SpeechRecognizer(
        backbone, preprocessor=SpeechRecognizerPreprocessor(tokenizer=tokenizer)
    ).save_to_preset(recognizer_preset)
    imports = [
        line for line in readme_first_look().splitlines() if line.startswith(("import ", "from "))
    ]
    code = "\n".join(
        imports
        + [
            "import json, keras",
            "ids = {}",
            f"for preset in {[backbone_preset, recognizer_preset]!r}:",
            "    tokenizer = SpeechRecognizer.from_preset(preset).preprocessor.tokenizer",
            f"    ids[preset] = [type(tokenizer).__name__, keras.ops.convert_to_numpy(tokenizer({TEXTS!r})).tolist()]",
            "print(json.dumps(ids))",
        ]
    )
    loaded = json.loads(run_fresh(code, cwd=tmp_path).splitlines()[-1])
    expected = ["CharacterTokenizer", test_case.to_numpy(tokenizer(TEXTS)).tolist()]
    assert loaded == {backbone_preset: expected, recognizer_preset: expected}
