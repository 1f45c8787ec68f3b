# %% [markdown]
# # Your first keras-slam model: audio files -> TFRecords -> SLAM -> ASR
#
# Step by step: write a few WAV files, turn them into TFRecord shards with
# the `keras-slam make-tfrecords` command, pre-train a tiny SLAM model,
# fine-tune it for CTC speech recognition, evaluate it (CER / WER per
# language), save it as a preset, load it back and transcribe the WAVs.
#
#     python guides/01_first_model.py            # a few minutes on a CPU
#     python guides/01_first_model.py --tiny     # seconds (what the tests run)
#
# Any Keras backend: `KERAS_BACKEND=jax|tensorflow|torch`.

# %%
import json
import os
import shutil
import subprocess
import sys
import tempfile
import wave

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keras_slam import cli
from keras_slam.models.speech_recognizer import SpeechRecognizer
from recipes import asr
from recipes import main as main_recipe

TINY = "--tiny" in sys.argv or os.environ.get("KERAS_SLAM_GUIDE_TINY") == "1"
work = tempfile.mkdtemp(prefix="keras_slam_guide_")
print("working in", work)

# %% [markdown]
# ## 1. Audio files
# Real recordings work the same way (any rate, WAV/FLAC/...: the writer
# resamples to 16 kHz). Here espeak-ng speaks a few sentences; without it,
# numpy writes tone sweeps so that the guide still runs.

# %%
SENTENCES = [
    "the cat sat on the mat",
    "a dog ran in the park",
    "we like green tea",
    "it is a sunny day",
]


def write_wav(path, samples, rate=16000):
    with wave.open(path, "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(rate)
        file.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())


manifest = os.path.join(work, "manifest.jsonl")
with open(manifest, "w", encoding="utf-8") as file:
    for i, text in enumerate(SENTENCES):
        path = os.path.join(work, f"utt{i}.wav")
        if shutil.which("espeak-ng"):
            subprocess.run(["espeak-ng", "-v", "en-us", "-w", path, text], check=True)
        else:
            t = np.arange(int(16000 * (0.6 + 0.08 * len(text)))) / 16000
            write_wav(path, 0.3 * np.sin(2 * np.pi * (200 + 100 * i) * t * (1 + t)))
        file.write(
            json.dumps({"id": f"utt{i}", "audio": path, "text": text, "language": "en"}) + "\n"
        )

# %% [markdown]
# ## 2. TFRecords
# The command line writes GZIP shards plus a `summary.json` (the Python API
# is `keras_slam.data.writers.write_shards`).

# %%
shards = os.path.join(work, "corpus", "paired", "mine", "en")  # <corpus>/paired/<split>/<language>
cli.main(
    [
        "make-tfrecords",
        "--input",
        manifest,
        "--output",
        shards,
        "--format",
        "jsonl",
        "--gzip",
        "--no-progress",
    ]
)
print(sorted(os.listdir(shards)))

# %% [markdown]
# ## 3. Pre-training
# Four sentences are far too few to pre-train on, so this step uses the
# bundled sample corpus (tfrecords/sample: speech-only, text-only and paired
# shards in four languages) with the main job's recipe: every SLAM objective
# (w2v-BERT, span MLM, TLM, STM, CTC) in one step. The backbone, tokenizer
# and front end are saved as a preset.

# %%
settings = (
    main_recipe.TINY
    if TINY
    else main_recipe.Settings(main_recipe.BACKBONE, pretrain_steps=150, finetune_steps=200)
)
tokenizer = asr.build_tokenizer(languages=settings.languages)
front_end = asr.make_front_end()
pretrained = os.path.join(work, "pretrained")
history = main_recipe.pretrain(settings, tokenizer, front_end, pretrained)
print(
    {
        name: (round(v[0], 3), round(v[-1], 3))
        for name, v in history.items()
        if name.endswith("loss")
    }
)
print(sorted(os.listdir(pretrained)))

# %% [markdown]
# ## 4. CTC fine-tuning
# `SpeechRecognizer.from_preset` reads the backbone, tokenizer and front end
# and adds a CTC head. `compile` takes separate learning rates for the head
# and the encoder (`encoder_learning_rate_multiplier`) and can keep the
# encoder frozen for the first steps (`freeze_encoder_steps`, without a
# recompile). `BlankOnlyGuard` warns if the model still predicts only
# blanks after a number of steps.

# %%
from keras_slam.callbacks import BlankOnlyGuard

recognizer = SpeechRecognizer.from_preset(pretrained)
train = asr.paired_dataset(
    tokenizer,
    front_end,
    "train",
    languages=settings.languages,
    batch_seconds=settings.batch_seconds,
    training=True,
)
guard = BlankOnlyGuard(next(iter(train)), check_after_steps=settings.finetune_steps)
losses = asr.finetune(
    recognizer,
    train,
    settings.finetune_steps,
    freeze_encoder_steps=settings.finetune_steps // 10,
    callbacks=[guard],
)["loss"]
print(f"CTC loss {losses[0]:.2f} -> {losses[-1]:.2f}")

# %% [markdown]
# ## 5. Evaluation
# CER and WER per language, on the sample's held-out test split and on our
# own shards (read by the same pipeline).

# %%
rates, examples = asr.evaluate(
    recognizer,
    asr.paired_dataset(tokenizer, front_end, "test", languages=settings.languages),
    settings.languages,
)
print(asr.format_error_rates(rates))
own_rates, own_examples = asr.evaluate(
    recognizer,
    asr.paired_dataset(
        tokenizer, front_end, "mine", corpus=os.path.join(work, "corpus"), languages=("en",)
    ),
    ("en",),
)
print(asr.format_error_rates(own_rates))

# %% [markdown]
# ## 6. Save, reload, transcribe
# A recognizer preset holds the backbone, the head, the tokenizer and the
# front end; `transcribe` takes raw audio, one transcript per waveform
# (greedy or beam search), and resamples it to the front end's 16 kHz.
# `keras-slam evaluate-asr --preset <dir> --data <shards> --languages en`
# scores it from the command line.

# %%
import soundfile

preset = os.path.join(work, "my_recognizer")
recognizer.save_to_preset(preset)
reloaded = SpeechRecognizer.from_preset(preset)
waveforms = []
for i in range(len(SENTENCES)):
    audio, rate = soundfile.read(os.path.join(work, f"utt{i}.wav"), dtype="float32")
    waveforms.append(audio)  # one rate for all files (espeak-ng: 22.05 kHz)
greedy = reloaded.transcribe(waveforms, sample_rate=rate)
beam = reloaded.transcribe(waveforms, strategy="beam_search", beam_width=8, sample_rate=rate)
for text, greedy_text, beam_text in zip(SENTENCES, greedy, beam):
    print(f"{text!r:32} greedy {greedy_text!r:32} beam {beam_text!r}")
assert greedy == recognizer.transcribe(waveforms, sample_rate=rate)
print("guide finished")
