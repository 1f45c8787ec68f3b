"""Teacher forcing: a pipeline batch with translations -> (x, y) for `SpeechTranslator`.

For one item with target tokens t_1..t_n (the translation's ids, right-padded
to L' with the pad id 0, `translation_padding_mask` a prefix mask):

    decoder_token_ids  = [BOS, t_1, ..., t_n, 0, ...]      (B, L' + 1)
    target_ids         = [t_1, ..., t_n, EOS, 0, ...]      (B, L' + 1)
    decoder_padding_mask = target_padding_mask = 1 on the first n + 1 positions

so position i of the decoder sees BOS, t_1..t_i and predicts t_{i+1} (EOS
last). A row without translation tokens (batch padding) gets all-zero masks.
TensorFlow ops: runs inside `tf.data` (`dataset.map`) or eagerly.
"""

import tensorflow as tf

SPEECH_KEYS = ("speech_features", "speech_padding_mask")
TEXT_KEYS = ("token_ids", "token_padding_mask")
MODALITIES = ("speech", "text")


def encoder_keys(batch):
    """The source fields of a batch: speech when it has features (a paired
    batch's transcript is then ignored), else source text."""
    if "speech_features" in batch:
        return SPEECH_KEYS
    if "token_ids" in batch:
        return TEXT_KEYS
    raise KeyError(f"a translation batch needs speech_features or token_ids; got {sorted(batch)}")


def split_translation_batch(batch, bos_id, eos_id):
    """Pipeline batch -> (x, y) with teacher forcing (module docstring).

    Args:
        batch: {"translation_ids" (B, L') int, "translation_padding_mask"
            (B, L')} plus speech ("speech_features", "speech_padding_mask")
            or source text ("token_ids", "token_padding_mask"); or a joint
            batch {"speech": such a batch, "text": such a batch}, split
            sub-batch by sub-batch.
        bos_id, eos_id: `SpeechTranslator.bos_id` / `.eos_id`.
    Returns:
        x = the source fields + {"decoder_token_ids" (B, L' + 1) int32,
        "decoder_padding_mask" (B, L' + 1) float32}; y = {"target_ids"
        (B, L' + 1) int32, "target_padding_mask" (B, L' + 1) float32}, and
        for speech with a transcript ("token_ids", a paired batch)
        {"transcript_ids" (B, S) int32, "transcript_padding_mask" (B, S)}.
    """
    if any(name in batch for name in MODALITIES):
        split = {name: split_translation_batch(batch[name], bos_id, eos_id) for name in batch}
        return {name: s[0] for name, s in split.items()}, {name: s[1] for name, s in split.items()}
    for key in ("translation_ids", "translation_padding_mask"):
        if key not in batch:
            raise KeyError(
                f"a translation batch needs {key!r} (speech_dataset(..., "
                f"translation_tokenizer=...)); got {sorted(batch)}"
            )
    target = tf.cast(batch["translation_ids"], tf.int32)
    target_mask = tf.cast(batch["translation_padding_mask"] > 0, tf.int32)
    lengths = tf.reduce_sum(target_mask, axis=1)
    present = tf.cast(lengths > 0, tf.int32)[:, None]
    target = target * target_mask
    first = tf.ones_like(target[:, :1])
    decoder_token_ids = tf.concat([first * bos_id, target], axis=1) * present
    mask = tf.concat([first, target_mask], axis=1) * present
    eos = tf.one_hot(lengths, tf.shape(mask)[1], dtype=tf.int32) * present * eos_id
    target_ids = tf.concat([target, tf.zeros_like(first)], axis=1) + eos
    mask = tf.cast(mask, tf.float32)
    x = {key: batch[key] for key in encoder_keys(batch)}
    x.update(decoder_token_ids=decoder_token_ids, decoder_padding_mask=mask)
    y = {"target_ids": target_ids, "target_padding_mask": mask}
    if encoder_keys(batch) == SPEECH_KEYS and "token_ids" in batch:
        # The spoken side's transcript: labels of the CTC auxiliary.
        y.update(
            transcript_ids=tf.cast(batch["token_ids"], tf.int32),
            transcript_padding_mask=tf.cast(batch["token_padding_mask"], tf.float32),
        )
    return x, y
