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
    assert [answer for *_, answer in held_out] == ["Guten Tag", "hello there world"]
    assert not set(instructions.HELD_OUT) & set(instructions.TRAINED)
    # Only the held-out family has a context: training never sees the slot.
    for family in instructions.TRAINED:
        assert instructions.context(family, RECORDS[0]) is None
    assert instructions.context("contextual_biasing", RECORDS[1]) == "hello, there, world"


def test_biasing_words_are_the_longest_listed_alphabetically():
    transcript = "El día de las Candelas, entra el sol por las callejuelas."
    assert instructions.biasing_words(transcript) == ["callejuelas", "Candelas", "entra"]
    # Distinct words only; equal lengths keep the first occurrence.
    assert instructions.biasing_words("ab cd ab ef", count=2) == ["ab", "cd"]
    assert instructions.words("Der Genuß, nie!") == ["der", "genuß", "nie"]


def test_unknown_language_names_the_record():
    record = dict(RECORDS[1], id="x7", language="xx")
    with pytest.raises(ValueError, match="record x7: language 'xx'"):
        instructions.instruction_examples([record])
