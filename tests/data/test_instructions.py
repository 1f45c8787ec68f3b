import numpy as np
import pytest

from keras_slam.data import instructions

RECORDS = [
    {"id": "a", "transcript": "Guten Tag", "language": "de", "translation": "Good day",
     "target_language": "en"},
    {"id": "b", "transcript": "hello there world", "language": "en", "translation": "",
     "target_language": ""},
    {"id": "c", "transcript": " ", "language": "en", "translation": "", "target_language": ""},
]  # fmt: skip


def test_examples_per_family_and_held_out():
    examples = instructions.instruction_examples(RECORDS)
    assert [(i, family, answer) for i, family, _, answer in examples] == [
        (0, "transcribe", "Guten Tag"),
        (0, "translate", "Good day"),
        (0, "language", "German"),
        (1, "transcribe", "hello there world"),
        (1, "language", "English"),
    ]
    held_out = instructions.instruction_examples(RECORDS, instructions.HELD_OUT)
    assert [answer for *_, answer in held_out] == [
        "Guten Tag (2 words)",
        "hello there world (3 words)",
    ]
    assert not set(instructions.HELD_OUT) & set(instructions.TRAINED)


def test_unknown_language_names_the_record():
    record = dict(RECORDS[1], id="x7", language="xx")
    with pytest.raises(ValueError, match="record x7: language 'xx'"):
        instructions.instruction_examples([record])


def test_batches_have_fixed_shapes_and_filler_rows():
    examples = instructions.instruction_examples(RECORDS)
    features = [np.ones((5, 3), "float32"), np.ones((7, 3), "float32")]
    batches = list(
        instructions.instruction_batches(
            examples,
            features,
            lambda text: [2] + [4] * len(text.split()),
            lambda text: [5] * len(text.split()) + [1],
            batch_size=3,
            max_frames=8,
            prompt_length=12,
            response_length=6,
        )
    )
    assert len(batches) == 2
    last = batches[-1]
    assert last["speech_features"].shape == (3, 8, 3)
    assert last["prompt_token_ids"].shape == (3, 12)
    assert last["response_token_ids"].shape == (3, 6)
    np.testing.assert_array_equal(last["speech_padding_mask"].sum(axis=1), [7, 7, 0])
    np.testing.assert_array_equal(last["response_padding_mask"].sum(axis=1), [4, 2, 0])
    assert list(last["family"]) == ["transcribe", "language", ""]


def test_too_long_item_names_item_and_limit():
    examples = instructions.instruction_examples(RECORDS[:1])
    batches = instructions.instruction_batches(
        examples, [np.ones((9, 3))], lambda t: [2], lambda t: [1], 2, 8, 4, 4
    )
    with pytest.raises(ValueError, match="speech frames of batch item 0: 9 > 8"):
        next(batches)
