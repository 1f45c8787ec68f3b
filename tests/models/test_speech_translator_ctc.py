"""The translator's CTC auxiliary on the speech encoder (`ctc_loss_weight`)."""

import keras
import numpy as np

from keras_slam.data.translation import split_translation_batch
from tests import test_case
from tests.models.test_speech_translator import (
    SOURCES,
    TARGETS,
    make_translator,
    random_decoder_inputs,
    speech,
)


def ctc_outputs_fn(translator):
    def call_fn(inputs):
        outputs = translator(inputs, training=False)
        return {
            "logits": (outputs["logits"], inputs["decoder_padding_mask"]),
            "ctc_logits": (outputs["ctc_logits"], outputs["ctc_padding_mask"]),
        }

    return call_fn


def build_ctc_translator(inputs):
    translator = make_translator(ctc_loss_weight=0.5)
    call_fn = ctc_outputs_fn(translator)
    call_fn(inputs)
    return translator, call_fn


def paired(translator, batch, sources, targets):
    """Speech + its transcript + translation -> numpy (x, y) with transcript labels."""
    preprocessor = translator.preprocessor
    batch = dict(
        batch, **preprocessor.tokenize_sources(sources), **preprocessor.tokenize_targets(targets)
    )
    x, y = split_translation_batch(batch, translator.bos_id, translator.eos_id)
    return keras.tree.map_structure(np.asarray, x), keras.tree.map_structure(np.asarray, y)


def test_split_puts_the_spoken_transcript_in_the_labels(seeded):
    translator = make_translator()
    x, y = paired(translator, speech(seeded), SOURCES, TARGETS)
    sources = translator.preprocessor.tokenize_sources(SOURCES)
    np.testing.assert_array_equal(y["transcript_ids"], sources["token_ids"])
    np.testing.assert_array_equal(y["transcript_padding_mask"], sources["token_padding_mask"])
    assert "token_ids" not in x  # the encoder reads the speech only


def test_ctc_outputs_padding_invariance_and_backend_parity(seeded, parity_worker):
    translator = make_translator(ctc_loss_weight=0.5)
    call_fn = ctc_outputs_fn(translator)
    inputs = dict(speech(seeded), **random_decoder_inputs(seeded, translator))
    outputs = test_case.normalize_outputs(call_fn(inputs))
    vocabulary_size = translator.preprocessor.tokenizer.vocabulary_size()
    assert outputs["ctc_logits"][0].shape[::2] == (3, vocabulary_size)
    test_case.assert_padding_invariant(
        call_fn,
        inputs,
        {"speech_features": "speech_padding_mask", "decoder_token_ids": "decoder_padding_mask"},
    )
    test_case.assert_backend_parity(
        "tests.models.test_speech_translator_ctc:build_ctc_translator",
        inputs,
        parity_worker=parity_worker,
    )


def test_fit_trains_the_ctc_head_and_the_config_keeps_it(seeded):
    translator = make_translator(ctc_loss_weight=0.5)
    x, y = paired(translator, speech(seeded, min_length=32), SOURCES, TARGETS)
    head_before = test_case.to_numpy(translator.ctc_head.kernel)
    history = translator.fit(x, y, batch_size=3, epochs=1, verbose=0).history
    assert np.isfinite(history["ctc_loss"][0]) and history["ctc_loss"][0] > 0
    assert not np.array_equal(head_before, test_case.to_numpy(translator.ctc_head.kernel))
    clone = type(translator).from_config(translator.get_config())
    assert clone.ctc_loss_weight == 0.5
    assert clone.ctc_head.units == translator.ctc_head.units


def test_ctc_term_equals_keras_ctc_loss_per_item(seeded):
    """loss - ST loss = weight * mean_i(CTC_i / transcript length_i), CTC_i from
    `keras.ops.ctc_loss` on item i's real frames alone."""
    weight = 0.5
    translator = make_translator(ctc_loss_weight=weight)
    x, y = paired(translator, speech(seeded, min_length=32), SOURCES, TARGETS)
    outputs = translator(x)
    total = test_case.to_numpy(translator.compute_loss(x, y, outputs))
    st_only = {key: y[key] for key in ("target_ids", "target_padding_mask")}
    st = test_case.to_numpy(translator.compute_loss(x, st_only, outputs))
    ctc_logits = test_case.to_numpy(outputs["ctc_logits"])
    frames = test_case.to_numpy(outputs["ctc_padding_mask"]).sum(1).astype(int)
    labels = y["transcript_ids"]
    lengths = y["transcript_padding_mask"].sum(1).astype(int)
    reference = [
        test_case.to_numpy(
            keras.ops.ctc_loss(
                labels[i : i + 1, : lengths[i]],
                ctc_logits[i : i + 1, : frames[i]],
                np.array([lengths[i]]),
                np.array([frames[i]]),
            )
        )[0]
        / lengths[i]
        for i in range(len(labels))
    ]
    np.testing.assert_allclose(total - st, weight * np.mean(reference), rtol=1e-4)
    assert set(translator.loss_trackers) == {"st", "mt", "ctc"}


def test_no_ctc_head_by_default(seeded):
    translator = make_translator()
    inputs = dict(speech(seeded), **random_decoder_inputs(seeded, translator))
    assert translator.ctc_head is None
    assert translator(inputs).shape == (3, 7, translator.target_vocabulary_size)
