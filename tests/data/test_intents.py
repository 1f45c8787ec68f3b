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


def test_translation_pairs_fill_both_sides_with_the_same_slot_indices_and_keep_the_city():
    by_id = {pair["id"]: pair for pair in intents.translation_pairs("de", "train")}
    # "I need to pay {bill} {when}." (pay_bill/0; bill varies slowest in the
    # English order even where German puts {when} first), combination 5 =
    # (bill 1, when 2).
    assert by_id["de-pay_bill-0-5"] == {
        "id": "de-pay_bill-0-5",
        "de": "Ich muss am Freitag meine Handyrechnung bezahlen.",
        "en": "I need to pay my phone bill on Friday.",
        "template": "pay_bill/0",
        "split": "train",
    }
    moved = {p["id"]: p for s in ("train", "test") for p in intents.translation_pairs("fr", s)}
    assert moved["fr-address_change-0-1"]["fr"] == (
        "J'ai déménagé à Nantes et je dois mettre à jour mon adresse."
    )
    assert moved["fr-address_change-0-1"]["en"] == (
        "I have moved to Nantes and need to update my address."
    )
    for language in ("de", "es", "fr", "it"):
        for pair in intents.translation_pairs(language, "train"):
            assert "{" not in pair[language] + pair["en"], pair


@pytest.mark.parametrize("held_out", intents.HELD_OUT)
def test_translation_test_pairs_are_unseen_on_both_sides_in_every_direction(held_out):
    pairs = {
        (language, split): intents.translation_pairs(language, split, held_out)
        for language in ("de", "es", "fr", "it")
        for split in ("train", "test")
    }
    ids = [pair["id"] for rows in pairs.values() for pair in rows]
    assert len(ids) == len(set(ids))
    english = {
        split: {pair["en"] for (_, s), rows in pairs.items() if s == split for pair in rows}
        for split in ("train", "test")
    }
    assert english["test"] and not english["train"] & english["test"]
    for language in ("de", "es", "fr", "it"):
        train = {pair[language] for pair in pairs[language, "train"]}
        test = {pair[language] for pair in pairs[language, "test"]}
        assert test and not train & test
        templates = {split: {p["template"] for p in pairs[language, split]} for split in english}
        if held_out == "template":
            assert not templates["train"] & templates["test"]
            assert templates["test"] == {
                f"{intent}/{intents.test_template(intent)}" for intent in intents.INTENTS
            }
        else:  # every test sentence's template is trained on, with other slot values
            assert templates["test"] <= templates["train"]
    # Slots: combinations (n + template position) % 3 == 0 of templates with >= 2 of them.
    tested = [p["id"] for p in pairs["de", "test"]]
    if held_out == "slots":
        assert tested[:3] == ["de-abroad-0-0", "de-abroad-0-3", "de-abroad-0-6"]
        assert len(tested) == 27 and len(pairs["de", "train"]) == 83


def test_translation_pairs_refuse_english_unknown_languages_and_splits():
    for language, split, held_out in (("en", "train", "slots"), ("nl", "train", "slots")):
        with pytest.raises(ValueError, match="language must be one of"):
            intents.translation_pairs(language, split, held_out)
    with pytest.raises(ValueError, match="held_out in"):
        intents.translation_pairs("de", "dev")
    with pytest.raises(ValueError, match="held_out in"):
        intents.translation_pairs("de", "train", "intent")
