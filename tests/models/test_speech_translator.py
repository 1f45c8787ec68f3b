import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_slam.data.tokenizers import CharacterTokenizer, build_character_vocabulary
from keras_slam.data.translation import split_translation_batch
from keras_slam.layers.conformer import ConformerConfig
from keras_slam.metrics.bleu import corpus_bleu
from keras_slam.models.slam_backbone import SLAMBackbone
from keras_slam.models.speech_encoder import SpeechEncoder
from keras_slam.models.speech_translator import SpeechTranslator, label_smoothed_cross_entropy
from keras_slam.models.speech_translator_preprocessor import SpeechTranslatorPreprocessor
from tests import test_case
from tests.conftest import reset_seeds_and_policy

SOURCES = ["hello world", "a cat sat", "good day"]
TARGETS = ["hallo welt", "eine katze", "guten tag"]
CONFORMER = ConformerConfig(num_heads=2, ffn_dim=32, kernel_size=3, conv_norm_groups=4, dropout=0.0)
DECODER = dict(
    decoder_num_layers=1,
    decoder_hidden_dim=24,
    decoder_intermediate_dim=32,
    decoder_num_heads=2,
    dropout=0.0,
    max_target_length=16,
)


def make_preprocessor():
    source = CharacterTokenizer(build_character_vocabulary(SOURCES), sequence_length=None)
    target = CharacterTokenizer(build_character_vocabulary(TARGETS), sequence_length=None)
    return SpeechTranslatorPreprocessor(tokenizer=source, target_tokenizer=target)


def make_translator(preprocessor=None, **overrides):
    preprocessor = preprocessor or make_preprocessor()
    backbone = SLAMBackbone(
        vocabulary_size=preprocessor.tokenizer.vocabulary_size(),
        hidden_dim=16,
        num_speech_layers=1,
        num_shared_layers=1,
        conformer=CONFORMER,
        subsampling_filters=4,
    )
    return SpeechTranslator(backbone, preprocessor=preprocessor, **{**DECODER, **overrides})


@pytest.fixture(scope="module")
def translator():
    """One translator for the tests that do not train it."""
    reset_seeds_and_policy()
    return make_translator()


def speech(rng, batch_size=3, length=48, min_length=20):
    return {
        "speech_features": rng.normal(size=(batch_size, length, 80)).astype("float32"),
        "speech_padding_mask": test_case.random_padding_mask(
            rng, batch_size, length, min_length=min_length
        ),
    }


def teacher_forced(translator, batch, targets):
    """batch + target strings -> numpy (x, y) through `split_translation_batch`."""
    batch = dict(batch, **translator.preprocessor.tokenize_targets(targets))
    x, y = split_translation_batch(batch, translator.bos_id, translator.eos_id)
    return keras.tree.map_structure(np.asarray, x), keras.tree.map_structure(np.asarray, y)


def logits_fn(translator):
    def call_fn(inputs):
        logits = translator(inputs, training=False)
        return {"logits": (logits, inputs["decoder_padding_mask"])}

    return call_fn


def random_decoder_inputs(rng, translator, batch_size=3, length=7):
    mask = test_case.random_padding_mask(rng, batch_size, length)
    ids = rng.integers(3, translator.target_vocabulary_size, size=(batch_size, length))
    return {"decoder_token_ids": (ids * mask).astype("int32"), "decoder_padding_mask": mask}


def build_translator(inputs):
    translator = make_translator()
    call_fn = logits_fn(translator)
    call_fn(inputs)
    return translator, call_fn


def test_split_translation_batch_known_answer():
    batch = {
        "token_ids": np.array([[5, 6], [0, 0]], "int32"),
        "token_padding_mask": np.array([[1, 1], [0, 0]], "float32"),
        "translation_ids": np.array([[7, 8, 0], [0, 0, 0]], "int32"),
        "translation_padding_mask": np.array([[1, 1, 0], [0, 0, 0]], "float32"),
    }
    x, y = split_translation_batch(batch, bos_id=10, eos_id=11)
    np.testing.assert_array_equal(x["decoder_token_ids"], [[10, 7, 8, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(y["target_ids"], [[7, 8, 11, 0], [0, 0, 0, 0]])
    for mask in (x["decoder_padding_mask"], y["target_padding_mask"]):
        np.testing.assert_array_equal(mask, [[1, 1, 1, 0], [0, 0, 0, 0]])
    assert sorted(x) == [
        "decoder_padding_mask",
        "decoder_token_ids",
        "token_ids",
        "token_padding_mask",
    ]
    # Inside tf.data, and on a joint batch, sub-batch by sub-batch.
    joint = tf.data.Dataset.from_tensors({"text": batch}).map(
        lambda b: split_translation_batch(b, 10, 11)
    )
    x_joint, y_joint = next(iter(joint))
    np.testing.assert_array_equal(x_joint["text"]["decoder_token_ids"], x["decoder_token_ids"])
    np.testing.assert_array_equal(y_joint["text"]["target_ids"], y["target_ids"])
    with pytest.raises(KeyError, match="translation_ids"):
        split_translation_batch({"token_ids": batch["token_ids"]}, 10, 11)


def test_label_smoothed_cross_entropy_matches_numpy(seeded):
    logits = seeded.normal(size=(2, 4, 6)).astype("float32")
    targets = seeded.integers(0, 6, size=(2, 4))
    mask = np.array([[1, 1, 1, 0], [1, 0, 0, 0]], "float32")
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    smoothed = np.full(logits.shape, 0.1 / 6) + 0.9 * np.eye(6)[targets]
    expected = (-(smoothed * log_probs).sum(-1) * mask).sum() / mask.sum()
    loss = label_smoothed_cross_entropy(targets, mask, logits, 0.1)
    np.testing.assert_allclose(test_case.to_numpy(loss), expected, rtol=1e-5)
    no_tokens = label_smoothed_cross_entropy(targets, 0 * mask, logits, 0.1)
    assert test_case.to_numpy(no_tokens) == 0.0


def test_task(seeded, parity_worker, tmp_path):
    translator = make_translator()
    inputs = dict(speech(seeded), **random_decoder_inputs(seeded, translator))
    # Joint ST + MT batches whose lengths differ, as bucketed pipelines give.
    train_batches = []
    for length, sources, targets in (
        (48, SOURCES[:2], TARGETS[:2]),
        (64, SOURCES[1:], TARGETS[1:]),
    ):
        speech_x, speech_y = teacher_forced(translator, speech(seeded, 2, length), targets)
        text = translator.preprocessor.tokenize_sources(sources)
        text_x, text_y = teacher_forced(translator, text, targets)
        train_batches.append(
            ({"speech": speech_x, "text": text_x}, {"speech": speech_y, "text": text_y})
        )
    test_case.run_task_test(
        "tests.models.test_speech_translator:build_translator",
        logits_fn,
        inputs,
        {"speech_features": "speech_padding_mask", "decoder_token_ids": "decoder_padding_mask"},
        {"logits": (3, 7, translator.target_vocabulary_size)},
        parity_worker,
        str(tmp_path),
        train_batches,
    )


def test_decoder_is_causal(seeded, translator):
    inputs = dict(speech(seeded), **random_decoder_inputs(seeded, translator))
    inputs["decoder_padding_mask"][:] = 1.0
    changed = dict(inputs, decoder_token_ids=inputs["decoder_token_ids"].copy())
    changed["decoder_token_ids"][:, 4] = (changed["decoder_token_ids"][:, 4] + 1) % 10 + 3
    before = test_case.to_numpy(translator(inputs))
    after = test_case.to_numpy(translator(changed))
    np.testing.assert_allclose(before[:, :4], after[:, :4], atol=1e-6)
    assert np.abs(before[:, 4:] - after[:, 4:]).max() > 1e-3


def test_text_input_is_padding_invariant(seeded, translator):
    sources = translator.preprocessor.tokenize_sources(SOURCES)
    inputs = dict(sources, **random_decoder_inputs(seeded, translator))
    test_case.assert_padding_invariant(
        logits_fn(translator),
        inputs,
        {"token_ids": "token_padding_mask", "decoder_token_ids": "decoder_padding_mask"},
    )


def test_cached_steps_equal_teacher_forced_logits(seeded, translator):
    """Greedy `generate` (cached, one step per token) picks the argmax of the
    teacher-forced logits of its own output, and the step logits equal them."""
    batch = speech(seeded)
    generated = translator.generate(batch, max_length=8)
    assert generated.shape == (3, 8)
    assert np.all(generated[:, 0] == translator.bos_id)
    inputs = dict(batch, decoder_token_ids=generated, decoder_padding_mask=np.ones((3, 8)))
    logits = test_case.to_numpy(translator(inputs))
    for row, ids in enumerate(generated):
        ends = np.flatnonzero(ids == translator.eos_id)
        last = ends[0] if len(ends) else len(ids) - 1
        np.testing.assert_array_equal(ids[1 : last + 1], logits[row, :last].argmax(-1))
    encoder_sequence, encoder_mask = translator.encode(batch)
    cache = translator._initial_cache(encoder_sequence, encoder_mask, 8)
    for index in range(7):
        step_logits, cache = translator._decode_step(generated[:, index : index + 1], index, cache)
        np.testing.assert_allclose(
            test_case.to_numpy(step_logits), logits[:, index], atol=1e-5, err_msg=f"step {index}"
        )


def test_beam_search_finds_the_sequence_greedy_misses(translator, monkeypatch):
    """A next-token table: greedy takes A (0.5) then EOS (0.35): 0.175; beam
    search finds B (0.4) then EOS (0.9): 0.36, and pads after EOS."""
    vocabulary_size = translator.target_vocabulary_size
    a, b, c, bos, eos = 3, 4, 5, translator.bos_id, translator.eos_id
    table = np.full((vocabulary_size, vocabulary_size), 1e-6)
    table[:, eos] = 1.0  # every other token ends the sentence
    table[bos, eos] = 1e-6
    table[bos, [a, b, c]] = [0.5, 0.4, 0.1]
    table[a, :] = 0.3 / (vocabulary_size - 2)
    table[a, [eos, c]] = [0.35, 0.34]
    table[b, [eos, c]] = [0.9, 0.1]
    log_table = keras.ops.convert_to_tensor(np.log(table / table.sum(1, keepdims=True)))

    def table_step(token_ids, index, cache):
        return keras.ops.take(log_table, token_ids[:, 0], axis=0), cache

    monkeypatch.setattr(translator, "_decode_step", table_step)
    batch = {key: value[:2] for key, value in speech(np.random.default_rng(0)).items()}
    greedy = translator.generate(batch, strategy="greedy", max_length=6)
    beam = translator.generate(batch, strategy="beam", beam_width=2, max_length=6)
    np.testing.assert_array_equal(greedy, [[bos, a, eos, 0, 0, 0]] * 2)
    np.testing.assert_array_equal(beam, [[bos, b, eos, 0, 0, 0]] * 2)
    assert translator.target_id_lists(beam) == [[b], [b]]


def test_joint_batch_loss_is_st_plus_weighted_mt(seeded):
    translator = make_translator(mt_loss_weight=5.0, label_smoothing=0.1)
    speech_x, speech_y = teacher_forced(translator, speech(seeded, 2), TARGETS[:2])
    text = translator.preprocessor.tokenize_sources(SOURCES)
    text_x, text_y = teacher_forced(translator, text, TARGETS)
    joint_x, joint_y = {"speech": speech_x, "text": text_x}, {"speech": speech_y, "text": text_y}

    def loss(x, y):
        return float(test_case.to_numpy(translator.compute_loss(x, y, translator(x))))

    st_loss, mt_loss = loss(speech_x, speech_y), loss(text_x, text_y) / 5.0
    np.testing.assert_allclose(loss(joint_x, joint_y), st_loss + 5.0 * mt_loss, rtol=1e-5)
    translator.mt_loss_weight = 0.5
    np.testing.assert_allclose(loss(joint_x, joint_y), st_loss + 0.5 * mt_loss, rtol=1e-5)
    logits = test_case.to_numpy(translator(text_x))
    expected = label_smoothed_cross_entropy(
        text_y["target_ids"], text_y["target_padding_mask"], logits, 0.1
    )
    np.testing.assert_allclose(mt_loss, test_case.to_numpy(expected), rtol=1e-5)


def test_save_to_preset_keeps_outputs_and_both_tokenizers(seeded, translator, tmp_path):
    inputs = dict(speech(seeded), **random_decoder_inputs(seeded, translator))
    restored = test_case.run_preset_test(translator, logits_fn, inputs, str(tmp_path))
    assert (tmp_path / "target_tokenizer.json").exists()
    preprocessor = restored.preprocessor
    assert (
        preprocessor.tokenizer.get_vocabulary()
        == translator.preprocessor.tokenizer.get_vocabulary()
    )
    assert preprocessor.target_tokenizer.get_vocabulary() == (
        translator.preprocessor.target_tokenizer.get_vocabulary()
    )


def test_backbone_preset_gets_a_new_decoder(tmp_path):
    preprocessor = make_preprocessor()
    backbone = make_translator(preprocessor).backbone
    preprocessor.tokenizer.save_to_preset(str(tmp_path))
    backbone.save_to_preset(str(tmp_path))
    translator = SpeechTranslator.from_preset(str(tmp_path), **DECODER)
    # The preset's one tokenizer serves both sides.
    vocabulary = preprocessor.tokenizer.get_vocabulary()
    assert translator.preprocessor.target_tokenizer.get_vocabulary() == vocabulary
    assert translator.target_vocabulary_size == len(vocabulary) + 2
    for ours, theirs in zip(translator.backbone.weights, backbone.weights):
        np.testing.assert_array_equal(test_case.to_numpy(ours), test_case.to_numpy(theirs))


def test_translate_waveforms(translator):
    waveforms = [
        0.1 * np.random.default_rng(0).normal(size=n).astype("float32") for n in (8000, 100)
    ]
    texts = translator.translate(waveforms, max_length=5)
    assert len(texts) == 2 and texts[1] == ""  # shorter than one window: no frames
    assert all(isinstance(text, str) for text in texts)


def test_errors(seeded, translator):
    encoder = SpeechEncoder(hidden_dim=16, num_layers=1, conformer=CONFORMER, subsampling_filters=4)
    speech_only = SpeechTranslator(encoder, target_vocabulary_size=10, **DECODER)
    with pytest.raises(ValueError, match="text input .* needs a SLAMBackbone"):
        speech_only(
            dict(
                translator.preprocessor.tokenize_sources(SOURCES),
                **random_decoder_inputs(seeded, speech_only),
            )
        )
    too_long = random_decoder_inputs(seeded, translator, length=17)
    with pytest.raises(ValueError, match="more than max_target_length=16"):
        translator(dict(speech(seeded), **too_long))
    with pytest.raises(ValueError, match="strategy must be"):
        translator.generate(speech(seeded), strategy="sample")
    with pytest.raises(ValueError, match="target_vocabulary_size or a preprocessor"):
        SpeechTranslator(encoder, **DECODER)


@pytest.mark.slow(backend="torch")
def test_overfits_a_tiny_batch_to_bleu_100():
    translator = make_translator(label_smoothing=0.0)
    rng = np.random.default_rng(0)
    batch = speech(rng, min_length=48)
    x, y = teacher_forced(translator, batch, TARGETS)
    translator.compile(learning_rate=3e-3)
    translator.fit(x, y, batch_size=3, epochs=50, verbose=0)
    hypotheses = translator.translate(batch, max_length=12)
    assert hypotheses == TARGETS
    # One document: the two-word sentences alone have no 4-grams to score.
    assert corpus_bleu([" ".join(TARGETS)], [" ".join(hypotheses)]) == pytest.approx(100.0)
