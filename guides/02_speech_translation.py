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
# which the text-translation side reads.

# %%
front_end = asr.make_front_end()
pretrained = os.path.join(work, "pretrained")
settings = main_recipe.Settings(
    config["backbone"], config["pretrain_steps"], config["finetune_steps"]
)
main_recipe.pretrain(settings, st.build_source_tokenizer(), front_end, pretrained)

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
losses = st.finetune(translator, train, config, joint=True)
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
# 2026-11-30 (JAX, shared 2-core CPU at load average 12-20, ~75 min; not
# rerun since), mean over de/es/fr/it -> en, 25 test sentences each, greedy,
# 200 fine-tuning steps:
#
# | setting | BLEU | chrF |
# |---|---|---|
# | ST, pre-trained encoder | 0.00 | 6.64 |
# | zero-shot MT of that model (text in) | 0.06 | 9.33 |
# | ST, random-init encoder | 0.05 | 7.31 |
# | joint ST + MT, pre-trained encoder | 0.00 | 8.08 |
#
# None of the targets is met: the decoder writes one string for
# every input. A tuning run on 2026-12-01 (JAX, load average 12-15;
# random-init encoder, ST only, 600 steps at learning rate 3e-3, otherwise
# `st_tiny`) is no better: BLEU 0.16, chrF 9.54, and 3 distinct outputs for
# the 100 test utterances. Fine-tuning shrinks the encoder's signal instead
# of using it: at the decoder's input, the standard deviation of the
# utterances' mean frames fell from 0.143 to 0.016 and the within-utterance
# one from 0.475 to 0.088 (loss 4.02 -> 3.06 with label smoothing 0.1,
# where the character prior sits).
#
# It is not a plumbing bug. The training and `translate` features of a
# record agree (max |diff| 1e-6), the logits at initialisation change with
# the encoder input, and 8 real spoken pairs overfit to BLEU 100 with 8
# different outputs after 200 full-batch steps (after 100: 2 distinct
# outputs, BLEU 25.6). So the decoder does learn to read the encoder, but
# only after about 25 passes over each pair; `st_tiny`'s 200 steps of 2-5
# utterances (16 s of audio) see at most a quarter of its 4,000 pairs once. What should help,
# and is not yet measured: more passes (more steps, or fewer pairs), a CTC
# loss on the encoder with the source transcript, and a longer pre-trained
# encoder (the main job's preset, `--preset`).
