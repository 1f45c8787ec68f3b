"""Speech instruction data for the SLM (`SpeechLanguageModel`).

Each speech record with a transcript (the paired sample, the spoken
translation corpus of `parallel_speech`) yields one example per instruction
family that applies to it:

    family        instruction                                   response
    transcribe    "Transcribe the audio."                       the transcript
    translate     "Translate the audio into English."           the translation (X->En records)
    language      "Which language is spoken?"                   "German", ...
    contextual_   "Transcribe the audio, using the words in     the transcript
    biasing       the context." + context: the utterance's
                  `BIASING_WORDS` longest words ("Context:
                  Candelas, callejuelas, entra")

`contextual_biasing` is HELD_OUT: never trained on (no trained family has
a context), it checks whether the adapter lets the LM use a new instruction
and the prompt's context slot zero-shot; `context(family, record)` gives
its word list.

`pad_rows` pads them into the `SpeechLanguageModel` inputs:
speech_features / speech_padding_mask (B, T, F) / (B, T), prompt_token_ids /
prompt_padding_mask (B, P), response_token_ids / response_padding_mask
(B, R) (`recipes/slm.py` makes the training batches).
"""

import re

import numpy as np

INSTRUCTIONS = {
    "transcribe": "Transcribe the audio.",
    "translate": "Translate the audio into English.",
    "language": "Which language is spoken?",
    "contextual_biasing": "Transcribe the audio, using the words in the context.",
}
TRAINED = ("transcribe", "translate", "language")
HELD_OUT = ("contextual_biasing",)
BIASING_WORDS = 3
LANGUAGE_NAMES = {
    "en": "English",
    "de": "German",
    "es": "Spanish",
    "fr": "French",
    "it": "Italian",
}


def response(family, record):
    """The response of `family` for a record {"transcript", "language",
    "translation", "target_language"}, or None when it does not apply."""
    transcript = record["transcript"].strip()
    if family == "transcribe":
        return transcript
    if family == "translate":
        if record.get("target_language") != "en" or not record.get("translation"):
            return None
        return record["translation"].strip()
    if family == "language":
        if record["language"] not in LANGUAGE_NAMES:
            raise ValueError(
                f"record {record.get('id', '?')}: language {record['language']!r} has no name "
                f"in LANGUAGE_NAMES ({sorted(LANGUAGE_NAMES)})"
            )
        return LANGUAGE_NAMES[record["language"]]
    if family == "contextual_biasing":
        return transcript
    raise ValueError(f"unknown instruction family {family!r}; known: {sorted(INSTRUCTIONS)}")


def words(text):
    """Lower-cased words of `text`, punctuation dropped (list of str)."""
    return re.findall(r"\w+", text.lower())


def biasing_words(transcript, count=BIASING_WORDS):
    """The `count` longest distinct words of `transcript` (first occurrence
    first among equal lengths), listed alphabetically so that the list does
    not give their order away."""
    distinct = list(dict.fromkeys(re.findall(r"\w+", transcript)))
    longest = sorted(distinct, key=len, reverse=True)[:count]
    return sorted(longest, key=str.lower)


def context(family, record):
    """The prompt's context text of `family` for a record, or None."""
    if family == "contextual_biasing":
        return ", ".join(biasing_words(record["transcript"]))
    return None


def instruction_examples(records, families=TRAINED):
    """[(record index, family, instruction, response)] for every record and
    family that applies (records without a transcript are left out)."""
    examples = []
    for index, record in enumerate(records):
        if not record["transcript"].strip():
            continue
        for family in families:
            answer = response(family, record)
            if answer is not None:
                examples.append((index, family, INSTRUCTIONS[family], answer))
    return examples


def pad_rows(rows, length=None, pad_value=0, what="row"):
    """Rows (lists or arrays, real positions first) -> (B, length, ...) array
    and (B, length) float32 mask; `length` default: the longest row (>= 1)."""
    rows = [np.asarray(row) for row in rows]
    if length is None:
        length = max(1, max(len(row) for row in rows))
    first = rows[0]
    out = np.full((len(rows), length) + first.shape[1:], pad_value, dtype=first.dtype)
    mask = np.zeros((len(rows), length), dtype="float32")
    for i, row in enumerate(rows):
        if len(row) > length:
            raise ValueError(f"{what} {i}: {len(row)} > {length}; raise the limit")
        out[i, : len(row)] = row
        mask[i, : len(row)] = 1.0
    return out, mask
