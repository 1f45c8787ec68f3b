"""Parallel text from gettext catalogs (keras_slam.data.gettext_pairs), on
small catalogs written here byte by byte, and the committed tfrecords/parallel."""

import gettext
import json
import lzma
import struct
from pathlib import Path

import pytest

from keras_slam import cli
from keras_slam.data import gettext_pairs

COMMITTED = gettext_pairs.PARALLEL_TEXT


def mo_bytes(entries, charset="UTF-8", big_endian=False):
    """A compiled catalog (GNU .mo, no hash table) of [(msgid, msgstr)]:
    str msgids, or bytes for plural ids ("one\\0many") and raw strings."""
    header = f"Content-Type: text/plain; charset={charset}\n"
    strings = [("", header), *entries]
    encode = [
        (value if isinstance(value, bytes) else value.encode(charset))
        for pair in strings
        for value in pair
    ]
    order = ">" if big_endian else "<"
    count = len(strings)
    data_start = 28 + 16 * count
    tables, blob = [b"", b""], b""
    for index, value in enumerate(encode):
        tables[index % 2] += struct.pack(order + "2I", len(value), data_start + len(blob))
        blob += value + b"\0"
    head = struct.pack(order + "7I", 0x950412DE, 0, count, 28, 28 + 8 * count, 0, data_start)
    return head + tables[0] + tables[1] + blob


def write_catalog(root, language, name, entries, **options):
    path = Path(root) / language / "LC_MESSAGES" / f"{name}.mo"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(mo_bytes(entries, **options))
    return path


def test_mo_reader_decodes_the_catalog_charset_and_drops_header_context_and_plurals(
    tmp_path,
):
    entries = [
        ("Cannot open the file.", "Die Datei kann nicht geöffnet werden."),
        ("menu\x04Open the door now", "Öffne jetzt die Tür"),
        (
            b"One file was removed\x00Many files were removed",
            b"Eine Datei\x00Viele Dateien",
        ),
    ]
    for options in ({}, {"charset": "ISO-8859-1"}, {"big_endian": True}):
        path = tmp_path / "c.mo"
        path.write_bytes(mo_bytes(entries, **options))
        read, undecodable = gettext_pairs.read_mo(path)
        assert (
            read == [entries[0], ("Open the door now", "Öffne jetzt die Tür")] and undecodable == 0
        ), options
    # A string that is not in the declared charset is counted, not fatal.
    path.write_bytes(
        mo_bytes(
            [
                ("Good morning to you", "Guten Morgen"),
                ("Bad bytes in here", b"Gr\xfc\xdfe"),
            ]
        )
    )
    assert gettext_pairs.read_mo(path) == ([("Good morning to you", "Guten Morgen")], 1)


def python_gettext_entries(path):
    """Singular (msgid, msgstr) of a catalog as Python's gettext reads it."""
    with open(path, "rb") as file:
        catalog = gettext.GNUTranslations(file)._catalog
    return sorted(
        (key.split("\x04")[-1], value)
        for key, value in catalog.items()
        if isinstance(key, str) and key
    )


def test_mo_reader_agrees_with_python_gettext(tmp_path):
    path = write_catalog(
        tmp_path,
        "de",
        "c",
        [
            ("Cannot open the file.", "Datei nicht lesbar."),
            ("menu\x04Quit the program", "Programm beenden"),
        ],
    )
    catalogs = [path] + [
        catalog
        for language in gettext_pairs.SAMPLE_LANGUAGES
        for catalog in gettext_pairs.catalog_files(gettext_pairs.LOCALE_ROOT, language)
    ]
    compared = 0
    for catalog in catalogs:
        try:
            expected = python_gettext_entries(catalog)
        except (
            UnicodeDecodeError,
            IndexError,
        ):  # catalogs Python cannot read (see read_mo)
            continue
        assert sorted(gettext_pairs.read_mo(catalog)[0]) == expected, catalog
        compared += 1
    assert compared >= 1


def test_mo_reader_names_the_file_and_entry_of_a_damaged_catalog(tmp_path):
    path = tmp_path / "broken.mo"
    path.write_bytes(b"not a catalog at all")
    with pytest.raises(gettext_pairs.CatalogError, match=r"broken\.mo: not a \.mo file"):
        gettext_pairs.read_mo(path)
    data = mo_bytes([("Cannot open the file.", "Datei nicht lesbar.")])
    path.write_bytes(data[:-10])
    with pytest.raises(
        gettext_pairs.CatalogError,
        match=r"broken\.mo: entry 1: string at bytes \d+-\d+ is beyond the end",
    ):
        gettext_pairs.read_mo(path)


@pytest.mark.parametrize(
    "text, sentence",
    [
        ("The file could not be opened.", True),
        ("Überprüfen Sie die Verbindung bitte erneut", True),
        ("Do you want to continue?", True),
        ("Open file", False),  # two words
        (" ".join(["word"] * 26), False),
        ("Cannot open %s for reading", False),
        ("Cannot open {0} for reading", False),
        ("Set $HOME to your folder", False),
        ("Read from /etc/passwd now", False),
        ("Open the <b>bold</b> file", False),
        ("_Open the selected file", False),
        ("&Open the selected file", False),
        ("Use the --force option now", False),
        ("First line here\nsecond line", False),
        ("Tab\there is bad", False),
        ("Control \x1b character here", False),
        ("Error 1234 5678 90 12", False),  # mostly digits
        ("'quoted' words are here", False),  # starts with punctuation
    ],
)
def test_is_sentence(text, sentence):
    assert gettext_pairs.is_sentence(text) == sentence


def test_split_is_a_function_of_the_normalised_english_and_near_its_percentages():
    assert gettext_pairs.english_key("Cannot open the file.") == gettext_pairs.english_key(
        "cannot  open the FILE"
    )
    assert gettext_pairs.split_of("Cannot open the file.") == gettext_pairs.split_of(
        "cannot open the file"
    )
    splits = [gettext_pairs.split_of(f"sentence number {index} is here") for index in range(20000)]
    for name, percent in gettext_pairs.SPLIT_PERCENT:
        assert abs(splits.count(name) / len(splits) - percent / 100) < 0.01, name


def test_licence_from_the_field_a_summary_or_unknown(tmp_path):
    documents = {
        "dep5": "Format: x\n\nFiles: *\nCopyright: someone\nLicense: GPL-2+\n\nLicense: MIT\n",
        "prose": "This is free software; you can redistribute it under the terms of the GNU Lesser General\n"
        "Public License as published by the FSF; either version 2.1 of the License, or (at your\noption) any later version.\n",
        "pointer": "See /usr/share/common-licenses/Apache-2.0.\n",
        "silent": "Copyright nobody.\n",
    }
    for package, text in documents.items():
        (tmp_path / package).mkdir()
        (tmp_path / package / "copyright").write_text(text)
    found = {
        package: gettext_pairs.licence_of(package, tmp_path) for package in [*documents, "absent"]
    }
    assert found == {
        "dep5": "GPL-2+",
        "prose": "LGPL-2.1+",
        "pointer": "Apache-2.0",
        "silent": "unknown",
        "absent": "unknown",
    }


def make_system(root):
    """A locale tree, dpkg file lists and copyright files for two languages."""
    locale, info, doc = root / "locale", root / "info", root / "doc"
    shared = (
        "The file could not be opened.",
        "Datei konnte nicht geöffnet werden.",
        "No se pudo abrir el archivo.",
    )
    catalogs = {
        ("de", "alpha"): [
            (shared[0], shared[1]),
            ("Please wait a moment", "Bitte einen Moment warten"),
            ("Save the document now", "Save the document now"),  # untranslated
            ("Open %s now please", "Öffne %s jetzt bitte"),
        ],
        ("de", "beta"): [
            (
                "the file could not be opened",
                "Die Datei ließ sich nicht öffnen",
            ),  # same key as alpha's: alpha wins
            ("Connection to the server was lost", "Verbindung zum Server verloren"),
        ],
        ("de", "iso_3166-2"): [("Free State of Bavaria", "Freistaat Bayern")],
        ("es", "alpha"): [
            (shared[0], shared[2]),
            ("Please wait a moment", "Espere un momento por favor"),
        ],
    }
    paths = {
        key: write_catalog(locale, key[0], key[1], entries) for key, entries in catalogs.items()
    }
    info.mkdir()
    (info / "alpha-l10n:amd64.list").write_text(
        f"/usr\n{paths['de', 'alpha']}\n{paths['es', 'alpha']}\n"
    )
    (info / "beta.list").write_text(f"{paths['de', 'beta']}\n")
    (doc / "alpha-l10n").mkdir(parents=True)
    (doc / "alpha-l10n" / "copyright").write_text("Files: *\nLicense: BSD-3-clause\n")
    return locale, info, doc


def read_split_files(folder):
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(Path(folder).rglob("*"))
        if path.is_file()
    }


def test_extraction_filters_deduplicates_splits_and_records_provenance(tmp_path):
    locale, info, doc = make_system(tmp_path)
    summary = gettext_pairs.write_parallel_text(tmp_path / "out", ("de", "es"), locale, info, doc)
    pairs = {
        language: [
            pair
            for split in gettext_pairs.SPLITS
            for pair in gettext_pairs.read_pairs(language, split, tmp_path / "out")
        ]
        for language in ("de", "es")
    }
    german = {pair["en"]: pair for pair in pairs["de"]}
    assert sorted(german) == [
        "Connection to the server was lost",
        "Please wait a moment",
        "The file could not be opened.",
    ]
    assert german["The file could not be opened."]["de"] == "Datei konnte nicht geöffnet werden."
    assert german["The file could not be opened."] == {
        "id": gettext_pairs.pair_id("de", "The file could not be opened."),
        "source_language": "en",
        "target_language": "de",
        "en": "The file could not be opened.",
        "de": "Datei konnte nicht geöffnet werden.",
        "package": "alpha-l10n",
        "licence": "BSD-3-clause",
        "catalog": "alpha",
        "split": gettext_pairs.split_of("The file could not be opened."),
    }
    assert (
        german["Connection to the server was lost"]["package"],
        german["Connection to the server was lost"]["licence"],
    ) == ("beta", "unknown")
    spanish = {pair["en"]: pair for pair in pairs["es"]}
    for (
        english,
        pair,
    ) in spanish.items():  # one split per English sentence, whatever the language
        assert pair["split"] == german[english]["split"] == gettext_pairs.split_of(english)
    for language in pairs:
        for split in gettext_pairs.SPLITS:
            in_file = gettext_pairs.read_pairs(language, split, tmp_path / "out")
            assert all(pair["split"] == split for pair in in_file)
            assert [pair["id"] for pair in in_file] == sorted(pair["id"] for pair in in_file)
    assert (
        summary["languages"]["de"]["pairs"] == 3 and summary["languages"]["de"]["catalogs"] == 2
    )  # iso_* left out
    assert summary["languages"]["de"]["packages"] == {"alpha-l10n": 2, "beta": 1}
    assert summary["licences"] == {"alpha-l10n": "BSD-3-clause", "beta": "unknown"}
    first = read_split_files(tmp_path / "out")
    gettext_pairs.write_parallel_text(tmp_path / "again", ("de", "es"), locale, info, doc)
    assert read_split_files(tmp_path / "again") == first  # byte-identical


def test_train_is_capped_at_the_first_pairs_by_id_dev_and_test_are_whole(tmp_path):
    locale, info, doc = make_system(tmp_path)
    nouns = ["apple", "bird", "cloud", "door", "engine"]
    nouns += ["forest", "garden", "harbour", "island", "jacket"]
    write_catalog(
        locale,
        "de",
        "delta",
        [(f"The {noun} is over there", f"Dort drüben ist {noun}") for noun in nouns]
        + [(f"Look at the {noun} now", f"Schau jetzt {noun} an") for noun in nouns],
    )
    full = gettext_pairs.write_parallel_text(
        tmp_path / "all", ("de",), locale, info, doc, max_train_pairs=0
    )
    capped = gettext_pairs.write_parallel_text(
        tmp_path / "capped", ("de",), locale, info, doc, max_train_pairs=5
    )
    assert full["max_train_pairs"] is None and capped["max_train_pairs"] == 5
    train = full["languages"]["de"]["splits"]["train"]
    assert train > 5 and full["languages"]["de"]["written"]["train"] == train
    assert capped["languages"]["de"]["splits"] == full["languages"]["de"]["splits"]
    assert capped["languages"]["de"]["written"] == {
        **full["languages"]["de"]["splits"],
        "train": 5,
    }
    for split in gettext_pairs.SPLITS:
        every = gettext_pairs.read_pairs("de", split, tmp_path / "all")
        kept = gettext_pairs.read_pairs("de", split, tmp_path / "capped")
        assert kept == (every[:5] if split == "train" else every), split
    with pytest.raises(ValueError, match="max_train_pairs must be >= 0"):
        gettext_pairs.write_parallel_text(
            tmp_path / "x", ("de",), locale, info, doc, max_train_pairs=-1
        )
    eval_capped = gettext_pairs.write_parallel_text(
        tmp_path / "eval", ("de",), locale, info, doc, max_train_pairs=5, max_eval_pairs=1
    )
    assert eval_capped["max_eval_pairs"] == 1
    for split in gettext_pairs.SPLITS:
        every = gettext_pairs.read_pairs("de", split, tmp_path / "all")
        kept = gettext_pairs.read_pairs("de", split, tmp_path / "eval")
        assert kept == every[: 5 if split == "train" else 1], split
    assert eval_capped["languages"]["de"]["written"] == {
        split: min(count, 5 if split == "train" else 1)
        for split, count in full["languages"]["de"]["splits"].items()
    }
    assert full["languages"]["de"]["splits"]["test"] > 1  # so the eval cap cuts
    with pytest.raises(ValueError, match="max_eval_pairs must be >= 0"):
        gettext_pairs.write_parallel_text(
            tmp_path / "x", ("de",), locale, info, doc, max_eval_pairs=-1
        )
    args = ["parallel-text", "--output", str(tmp_path / "cli"), "--languages", "de"]
    args += ["--locale-root", str(locale), "--dpkg-info", str(info)]
    assert cli.main([*args, "--doc-root", str(doc), "--max-train-pairs", "5"]) == 0
    assert read_split_files(tmp_path / "cli") == read_split_files(tmp_path / "capped")


def test_a_damaged_catalog_is_a_reported_skip_and_a_missing_language_an_error(tmp_path, capsys):
    locale, info, doc = make_system(tmp_path)
    (locale / "de" / "LC_MESSAGES" / "gamma.mo").write_bytes(b"\x00" * 40)
    summary = gettext_pairs.write_parallel_text(tmp_path / "out", ("de",), locale, info, doc)
    assert [entry["catalog"] for entry in summary["languages"]["de"]["skipped"]] == [
        str(locale / "de" / "LC_MESSAGES" / "gamma.mo")
    ]
    assert "not a .mo file" in summary["languages"]["de"]["skipped"][0]["reason"]
    args = [
        "parallel-text",
        "--output",
        str(tmp_path / "x"),
        "--languages",
        "de",
        "pt",
        "--locale-root",
        str(locale),
        "--dpkg-info",
        str(info),
        "--doc-root",
        str(doc),
    ]
    assert cli.main(args) == 1
    assert "no catalogs for language 'pt'" in capsys.readouterr().err
    with pytest.raises(
        FileNotFoundError,
        match=r"no parallel text .*pt/train\.jsonl\.xz; make it with `keras-slam parallel-text",
    ):
        gettext_pairs.read_pairs("pt", "train", tmp_path / "out")


def test_committed_text_has_enough_pairs_and_no_english_sentence_in_two_splits():
    summary = json.loads((COMMITTED / "summary.json").read_text(encoding="utf-8"))
    assert summary["max_train_pairs"] == gettext_pairs.MAX_TRAIN_PAIRS
    split_of_key = {}
    for language in gettext_pairs.SAMPLE_LANGUAGES:
        entry = summary["languages"][language]
        assert entry["pairs"] == sum(entry["splits"].values()), language
        assert entry["written"] == {
            **entry["splits"],
            "train": min(entry["splits"]["train"], summary["max_train_pairs"]),
        }, language
        for split in gettext_pairs.SPLITS:
            with lzma.open(
                COMMITTED / language / f"{split}.jsonl.xz", "rt", encoding="utf-8"
            ) as file:
                pairs = [json.loads(line) for line in file]
            assert len(pairs) == entry["written"][split], (language, split)
            assert [pair["id"] for pair in pairs] == sorted(pair["id"] for pair in pairs), (
                language,
                split,
            )
            for pair in pairs:
                assert (
                    pair["split"] == split
                    and pair["target_language"] == language
                    and pair["licence"] == summary["licences"][pair["package"]]
                )
                assert gettext_pairs.is_sentence(pair["en"]) and gettext_pairs.is_sentence(
                    pair[language]
                )
                key = gettext_pairs.english_key(pair["en"])
                assert split_of_key.setdefault(key, split) == split, (
                    language,
                    pair["en"],
                )
        assert entry["written"]["train"] >= 2000 and entry["written"]["test"] >= 400, language
        assert not any(package.startswith(("iso-codes",)) for package in entry["packages"])


def test_committed_text_regenerates_byte_identically_from_this_image(tmp_path):
    summary = json.loads((COMMITTED / "summary.json").read_text(encoding="utf-8"))
    for language in gettext_pairs.SAMPLE_LANGUAGES:
        if not gettext_pairs.catalog_files(gettext_pairs.LOCALE_ROOT, language):
            pytest.skip(
                f"no gettext catalogs for {language} in {gettext_pairs.LOCALE_ROOT}: not the image the text was made on"
            )
    regenerated = gettext_pairs.write_parallel_text(
        tmp_path,
        gettext_pairs.SAMPLE_LANGUAGES,
        max_train_pairs=summary["max_train_pairs"],
    )
    digests = {
        language: entry["catalog_digest"] for language, entry in regenerated["languages"].items()
    }
    if digests != {
        language: summary["languages"][language]["catalog_digest"] for language in digests
    }:
        pytest.skip(
            f"this image's catalogs differ from those the committed text was made from ({digests})"
        )
    assert read_split_files(tmp_path) == read_split_files(COMMITTED)
