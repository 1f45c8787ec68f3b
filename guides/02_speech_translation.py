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
preprocessor = st.build_preprocessor(pretrained)
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
# ## 6. What `st_tiny` measures: the decoder does not translate yet
# `python -m recipes.st --config st_tiny --output runs/st_tiny`, measured
# 2026-12-01 05:20-05:42 UTC (JAX, `nice -n 15` on the shared 2-core CPU
# at load average 6-13: 22 min wall, 482 s user+sys CPU, so ~4 min on 2
# idle cores by (user+sys)/2, well inside the 15 min target; speech
# synthesis of the 640 utterances included). `st_tiny` now has de/es -> en,
# 300 pairs per direction (translations <= 48 characters, audio <= 4 s),
# 20 test sentences per pair, a 1-layer decoder, 100 pre-training and 300
# fine-tuning steps per setting, the CTC auxiliary at weight 1; greedy:
#
# | setting | de-en BLEU / chrF | es-en BLEU / chrF | mean BLEU | mean chrF |
# |---|---|---|---|---|
# | ST, pre-trained encoder | 0.00 / 5.76 | 0.00 / 5.87 | 0.00 | 5.81 |
# | zero-shot MT of that model (text in) | 0.00 / 5.12 | 0.10 / 5.79 | 0.05 | 5.45 |
# | ST, random-init encoder | 0.00 / 8.63 | 0.00 / 8.85 | 0.00 | 8.74 |
# | joint ST + MT, pre-trained encoder | 0.29 / 5.24 | 0.30 / 5.60 | 0.29 | 5.42 |
#
# None of the targets is met; the differences are noise around a
# decoder that ignores its input: 3, 1, 6 and 4 distinct outputs for the 40
# test utterances ("annnnt t t t te ..."). The CTC auxiliary's loss per
# transcript character went from ~10.8 in the first window to 4.8
# (pre-trained encoder), 3.3 (random init) and 4.5 (joint), near a
# character prior: the encoder does not recognise the speech yet, and the
# 100-step pre-trained encoder (its own pre-training CTC loss: 3.35 per
# character) learns it more slowly than a random one. A longer run the
# same day (200 pre-training and 500 fine-tuning steps, otherwise
# `st_tiny`; stopped after its first setting to free the shared CPU):
# ST with the pre-trained encoder BLEU 0.33, chrF 7.39; its zero-shot MT
# 0.00 / 4.74; the CTC loss went from 10.2 to 3.2 per character.
#
# Earlier findings (2026-11-30/12-01, the old four-direction, 1,000-pair,
# 200-step `st_tiny` at ~75 min under load): no plumbing bug (the training
# and `translate` features agree; the logits change with the encoder
# input; 8 real spoken pairs overfit to BLEU 100 after 200 full-batch
# steps), but the decoder reads the encoder only after ~25 passes per pair,
# and fine-tuning without the CTC term shrank the encoder's signal (spread
# between utterances 0.143 -> 0.016). At `st_tiny`'s size, what is left is
# more passes: the fine-tuning steps take ~0.1 s of CPU each (ST) and ~0.3 s
# (joint), so several thousand fit in the 15 min budget; a longer
# pre-trained encoder (`--preset`, the main job's) is the other lever.
