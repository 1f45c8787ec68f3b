# %% [markdown]
# # Speech translation: spoken X -> English text with a SLAM encoder
#
# Step by step: speak sentence pairs into TFRecord shards, pre-train a tiny
# SLAM encoder, fine-tune a `SpeechTranslator` (encoder + Transformer
# decoder) on speech and text translation together, score it with BLEU and
# chrF per language pair (`keras-slam evaluate-st`), translate text with the
# same model, save it as a preset and translate a waveform.
#
#     python guides/02_speech_translation.py           # several minutes on a CPU
#     python guides/02_speech_translation.py --tiny    # what the tests run
#     python guides/02_speech_translation.py --preset runs/<ts>/pretrained  # the main job's encoder
#
# Any Keras backend: `KERAS_BACKEND=jax|tensorflow|torch`.

# %%
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keras_slam import cli
from keras_slam.data import pipeline
from keras_slam.models.speech_translator import SpeechTranslator
from recipes import asr, st
from recipes import main as main_recipe

TINY = "--tiny" in sys.argv or os.environ.get("KERAS_SLAM_GUIDE_TINY") == "1"
PRESET = sys.argv[sys.argv.index("--preset") + 1] if "--preset" in sys.argv else None
config = st.CONFIGS["st_smoke" if TINY else "st_tiny"]
work = tempfile.mkdtemp(prefix="keras_slam_st_guide_")
print("working in", work)

# %% [markdown]
# ## 1. Speech-translation shards
# `tfrecords/parallel` holds human translations from the gettext catalogs of
# a Debian image (German, Spanish, French, Italian <-> English).
# `ensure_parallel_speech` (the `keras-slam parallel-speech` command) speaks
# the non-English side with espeak-ng into shards whose records carry
# `transcript` (the spoken text), `translation` and `target_language`; a
# finished corpus is reused.

# %%
files = st.speech_corpus(os.path.join(work, "speech"), config)
print({split: len(paths) for split, paths in files.items()}, "shard files")

# %% [markdown]
# ## 2. A pre-trained encoder
# The main job's tiny SLAM pre-training (see guide 01) on the bundled
# sample corpus; its character tokenizer also covers the pairs' source text,
# which the text-translation side reads. `--preset` skips it and starts from
# a SLAM backbone preset you have, e.g. the `pretrained/` folder of
# `python -m recipes.main` (its tokenizer covers de/es/it/en text).

# %%
if PRESET:
    pretrained = PRESET
else:
    pretrained = os.path.join(work, "pretrained")
    settings = main_recipe.Settings(
        config["backbone"], config["pretrain_steps"], config["finetune_steps"]
    )
    main_recipe.pretrain(
        settings,
        st.build_source_tokenizer(),
        asr.make_front_end(),
        pretrained,
        evaluate_held_out=False,  # only the preset is used here
    )

# %% [markdown]
# ## 3. A SpeechTranslator on it
# `SpeechTranslator.from_preset(pretrained, preprocessor=..., decoder_num_layers=...)`
# (wrapped by `st.build_translator`) reads the backbone and adds a new
# decoder. The preprocessor keeps the preset's front end and source
# tokenizer and adds a target tokenizer (English characters); target ids
# end in BOS and EOS, two ids past the target tokenizer's.

# %%
preprocessor = st.build_preprocessor(pretrained, config)
translator = st.build_translator(pretrained, preprocessor, config)
print(config["decoder"], "BOS", translator.bos_id, "EOS", translator.eos_id)
translator.summary()

# %% [markdown]
# ## 4. Joint speech + text translation fine-tuning
# Each batch of the pipeline holds audio features, the source text's ids and
# the translation's ids. `st.joint_batch` makes it {"speech": ..., "text":
# ...}; `split_translation_batch` adds the decoder input (BOS + target) and
# labels (target + EOS). The loss is ST + `mt_loss_weight` x MT +
# `ctc_loss_weight` x CTC, each shown in the progress bar: the CTC
# auxiliary is a head on the speech encoder that predicts the spoken
# transcript (the batch's source ids), which keeps the spoken content in
# the encoder while the decoder learns to read it.

# %%
train = st.translation_dataset(files["train"], preprocessor, config, training=True)
losses = st.finetune(translator, train, config, joint=True)["loss"]
print(f"loss {losses[0]:.2f} -> {losses[-1]:.2f}")

# %% [markdown]
# ## 5. Save, evaluate, translate
# A task preset holds the encoder, decoder, front end and both tokenizers.
# `keras-slam evaluate-st` translates every test record (greedy, or
# `--strategy beam --beam-width 4`) and prints BLEU and chrF per language
# pair (sacrebleu, the numbers its own command line gives on the written
# `<pair>.ref.txt` / `<pair>.hyp.txt`); `--text` feeds the records'
# transcripts instead of their audio.

# %%
preset = os.path.join(work, "translator")
translator.save_to_preset(preset)
for mode in ([], ["--text"]):
    output = os.path.join(work, "evaluation" + "_text" * bool(mode))
    argv = ["evaluate-st", "--preset", preset, "--shards", *files["test"], "--output", output]
    if config["max_decode_length"]:
        argv += ["--max-length", str(config["max_decode_length"])]
    cli.main(argv + mode)
    with open(os.path.join(output, "report.json"), encoding="utf-8") as file:
        print(json.load(file)["scores"]["average"])

reloaded = SpeechTranslator.from_preset(preset)
record = next(pipeline.read_records(files["test"][:1]).as_numpy_iterator())
waveform = record["pcm"] / pipeline.PCM_SCALE
print("spoken:     ", record["transcript"].decode())
print("reference:  ", record["translation"].decode())
decoding = {"max_length": config["max_decode_length"]}
print("greedy:     ", reloaded.translate([waveform], **decoding)[0])
print("beam search:", reloaded.translate([waveform], strategy="beam", beam_width=4, **decoding)[0])
print("from text:  ", reloaded.translate_text([record["transcript"].decode()], **decoding)[0])
print("guide finished")

# %% [markdown]
# ## 6. What `st_tiny` measures: the decoder starts to read the encoder
# `st.run` scores only the test pairs within the training limits
# (`st.fits_training`) and adds, per setting, the teacher-forced
# cross-entropy per target character with each test utterance's own audio
# and with another one's (`translation_evaluation.encoder_reliance`): a
# decoder that ignores the encoder has gap 0. Measured 2026-12-01 19:44-20:28
# UTC (JAX, the recipe's 100-step backbone, one setting at a time, shared
# 2-core CPU at load 11-24), greedy, 54 test utterances (de/es -> en).
# Old defaults: 300 pairs per direction, `batch_seconds` 10, 300 steps (22
# test utterances within the limits); new: 2,000 pairs, 40, 1,200 steps.
#
# | setting | BLEU | chrF | distinct | CE own / other (gap) | CTC/char | CPU s |
# |---|---|---|---|---|---|---|
# | old, pre-trained | 0.30 | 9.06 | 7 / 22 | 2.7328 / 2.7325 (-0.0002) | 4.50 | 90 |
# | new, pre-trained | 0.22 | 10.46 | 45 / 54 | 2.3896 / 2.4028 (+0.0132) | 0.98 | 408 |
# | new, random init | 0.28 | 8.23 | 28 / 54 | 2.3953 / 2.4075 (+0.0122) | 0.86 | 405 |
# | new, zero-shot MT (text in) | 0.58 | 12.01 | 18 / 54 | - | - | - |
# | new, joint ST + MT, pre-trained | 0.26 | 10.52 | 39 / 54 | 2.3550 / 2.3615 (+0.0066) | 1.10 | 460 |
# | new after 300 CTC-only steps | 0.18 | 6.81 | 2 / 54 | 2.4218 / 2.4298 (+0.0080) | 0.97 | 490 |
#
# More pairs and 4x larger batches (10-16 utterances a step) make the
# decoder read the encoder, weakly (its own audio lowers the cross-entropy by
# ~0.5%), and let the pre-trained encoder's CTC head leave the character
# prior it stayed at with 2-4 utterances a step. BLEU stays below 1: the
# issue's targets (pre-trained clearly above random init, joint above
# ST-only: joint 0.26 / 10.52 vs 0.22 / 10.46, not separated; joint row
# measured 20:40-20:53 UTC at load 1-9) are not met at this size. CPU s: fine-tuning with its compile.
# A CTC-only warm-up of the encoder before the decoder trains (last row;
# not in the recipe) did not help: alone, the CTC stayed at the character
# prior for its 300 steps.
