"""Speech instruction data for the SLM (`SpeechLanguageModel`).

Each speech record with a transcript (the paired sample, the spoken
translation corpus of `parallel_speech`) yields one example per instruction
family that applies to it:

    family        instruction                                   response
    transcribe    "Transcribe the audio."                       the transcript
    translate     "Translate the audio into English."           the translation (X->En records)
    language      "Which language is spoken?"                   "German", ...
    count_words   "Transcribe the audio, then say how many      "<transcript> (7 words)"
                  words it has."

`count_words` is HELD_OUT: never trained on, it checks whether the adapter
lets the LM follow a new instruction zero-shot.

Batches (`instruction_batches`) are numpy dicts of fixed shapes (frames,
prompt and response lengths are arguments), the `SpeechLanguageModel`
inputs: speech_features / speech_padding_mask (B, T, F) / (B, T),
prompt_token_ids / prompt_padding_mask (B, P), response_token_ids /
response_padding_mask (B, R).
"""

import numpy as np

INSTRUCTIONS = {
    "transcribe": "Transcribe the audio.",
    "translate": "Translate the audio into English.",
    "language": "Which language is spoken?",
    "count_words": "Transcribe the audio, then say how many words it has.",
}
TRAINED = ("transcribe", "translate", "language")
HELD_OUT = ("count_words",)
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
    if family == "count_words":
        return f"{transcript} ({len(transcript.split())} words)"
    raise ValueError(f"unknown instruction family {family!r}; known: {sorted(INSTRUCTIONS)}")


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
            raise ValueError(f"{what} of batch item {i}: {len(row)} > {length}; raise the limit")
        out[i, : len(row)] = row
        mask[i, : len(row)] = 1.0
    return out, mask


def instruction_batches(
    examples,
    features,
    tokenize_prompt,
    tokenize_response,
    batch_size,
    max_frames,
    prompt_length,
    response_length,
    shuffle_seed=None,
    speech_keys=("speech_features", "speech_padding_mask"),
):
    """Fixed-shape `SpeechLanguageModel` batches of `instruction_examples`.

    Args:
        examples: `instruction_examples` output.
        features: per record, its (T, F) features (index as in `examples`),
            or its frozen encodings (T', D) (`speech_keys` then names them).
        tokenize_prompt / tokenize_response: text -> list of ids
            (`SpeechLanguageModel.prompt_ids` / `response_ids`).
        batch_size: items per batch; the last batch is padded with items
            that have no real position (all masks 0).
        max_frames, prompt_length, response_length: the fixed shapes;
            longer items raise ValueError naming the item and the limit.
        shuffle_seed: None keeps the order, else a shuffled order.
        speech_keys: the batch keys of the padded `features` and their mask.
    Yields: batch dicts (see the module docstring), plus "family" (B,) str.
    """
    order = np.arange(len(examples))
    if shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(len(examples))
    for start in range(0, len(order), batch_size):
        chosen = [examples[i] for i in order[start : start + batch_size]]
        filler = batch_size - len(chosen)
        speech = [features[index] for index, *_ in chosen]
        prompts = [tokenize_prompt(instruction) for _, _, instruction, _ in chosen]
        responses = [tokenize_response(answer) for *_, answer in chosen]
        feature_dim = speech[0].shape[-1]
        speech += [np.zeros((0, feature_dim), speech[0].dtype)] * filler
        prompts += [[]] * filler
        responses += [[]] * filler
        speech, speech_mask = pad_rows(speech, max_frames, 0.0, "speech frames")
        batch = {speech_keys[0]: speech, speech_keys[1]: speech_mask}
        batch["prompt_token_ids"], batch["prompt_padding_mask"] = pad_rows(
            [np.asarray(p, "int32") for p in prompts], prompt_length, 0, "prompt tokens"
        )
        batch["response_token_ids"], batch["response_padding_mask"] = pad_rows(
            [np.asarray(r, "int32") for r in responses], response_length, 0, "response tokens"
        )
        batch["family"] = np.array([family for _, family, *_ in chosen] + [""] * filler)
        yield batch
