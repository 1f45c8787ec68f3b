"""The templated banking intent set (data.intents): coverage and the split by template."""

import re
import string

import pytest

from keras_slam.data import intents


def normalised(text):
    return re.sub(r"[^\w ]", "", text.lower()).strip()


def test_at_least_ten_intents_in_at_least_four_languages_each_with_every_template():
    assert len(intents.INTENTS) >= 10 and len(intents.LANGUAGES) >= 4
    for intent in intents.INTENTS:
        assert set(intents.TEMPLATES[intent]) == set(intents.LANGUAGES), intent
        for language, templates in intents.TEMPLATES[intent].items():
            assert len(templates) == intents.TEMPLATES_PER_INTENT, (intent, language)
            assert len(set(templates)) == len(templates), (intent, language)
            for template in templates:
                slots = {name for _, name, _, _ in string.Formatter().parse(template) if name}
                assert slots <= set(intents.SLOTS[language]), (intent, language, template)


def test_split_is_by_template_and_no_test_sentence_is_seen_in_training():
    rows = intents.intent_utterances()
    assert len({row["id"] for row in rows}) == len(rows)
    splits_of_template = {}
    for row in rows:
        splits_of_template.setdefault(row["template"], set()).add(row["split"])
        assert "{" not in row["text"] and row["text"][0] == row["text"][0].upper(), row
    assert all(len(splits) == 1 for splits in splits_of_template.values())
    train = {normalised(row["text"]) for row in rows if row["split"] == "train"}
    test = {normalised(row["text"]) for row in rows if row["split"] == "test"}
    assert train and test and not train & test
    # Every intent is tested in every language, and trained on three templates.
    tested = {(row["label"], row["language"]) for row in rows if row["split"] == "test"}
    assert tested == {(i, lang) for i in intents.INTENTS for lang in intents.LANGUAGES}
    trained = {row["template"] for row in rows if row["split"] == "train"}
    assert len(trained) == len(intents.INTENTS) * len(intents.LANGUAGES) * 3


def test_slots_fill_every_combination_and_a_cap_spreads_over_them():
    rows = intents.intent_utterances(("en",), ("pay_bill",))
    by_template = {}
    for row in rows:
        by_template.setdefault(row["template"], []).append(row["text"])
    # "I need to pay {bill} {when}.": 3 bills x 3 days, bill varying slowest.
    assert len(by_template["pay_bill/en/0"]) == 9
    assert by_template["pay_bill/en/0"][0] == "I need to pay my electricity bill today."
    capped = intents.intent_utterances(("en",), ("pay_bill",), max_per_template=3)
    first = [row["text"] for row in capped if row["template"] == "pay_bill/en/0"]
    assert first == [
        "I need to pay my electricity bill today.",
        "I need to pay my phone bill today.",
        "I need to pay my water bill today.",
    ]
    assert len([row for row in capped if row["template"] == "pay_bill/en/3"]) == 1


def test_unknown_names_and_bad_caps_are_refused():
    with pytest.raises(ValueError, match=r"no intent templates for \['xx'\]"):
        intents.intent_utterances(("xx",))
    with pytest.raises(ValueError, match=r"no intent templates for \['mortgage'\]"):
        intents.intent_utterances(("en",), ("mortgage",))
    with pytest.raises(ValueError, match="max_per_template must be >= 1"):
        intents.intent_utterances(max_per_template=0)
