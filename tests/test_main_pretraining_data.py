"""recipes/main.py's pre-training batches: paired batches of their own size,
one language each when asked."""

import dataclasses

import numpy as np

from recipes import asr
from recipes import main as main_recipe


def test_paired_batches_of_their_own_size_and_one_language_in_turn():
    languages = ("en", "de")
    settings = dataclasses.replace(
        main_recipe.TINY, languages=languages, paired_batch_size=3, paired_batches_by_language=True
    )
    tokenizer = asr.build_tokenizer(languages=languages)
    transcripts = {
        language: {
            tuple(np.asarray(tokenizer(text)).tolist())
            for text in asr.training_transcripts(languages=(language,))
        }
        for language in languages
    }
    dataset = main_recipe.pretraining_dataset(
        settings, tokenizer, asr.make_front_end(), sub_batches=("speech", "paired")
    )
    batch_languages = []
    for batch in dataset.take(4).as_numpy_iterator():
        paired = batch["paired"]
        assert paired["speech_features"].shape[0] == 3
        assert paired["speech_padding_mask"].max(axis=1).sum() == 3
        rows = {
            tuple(ids[mask > 0].tolist())
            for ids, mask in zip(paired["token_ids"], paired["token_padding_mask"])
        }
        [language] = [name for name, texts in transcripts.items() if rows <= texts]
        batch_languages.append(language)
        # Speech keeps its budget: batch_seconds / 2 over 4 s utterances.
        assert batch["speech"]["speech_features"].shape[0] == int(
            settings.batch_seconds / 2 // main_recipe.PRETRAIN_SECONDS
        )
    assert set(batch_languages) == set(languages)
    assert batch_languages[2:] == batch_languages[:2]
