"""English-X sentence pairs from gettext catalogs: `keras-slam parallel-text`.

    summary = write_parallel_text("tfrecords/parallel", ("de", "es", "fr", "it"))

Programs' message catalogs (`<locale root>/<lang>/LC_MESSAGES/<domain>.mo`)
hold human translations of their English messages. They are read with the
.mo reader below (Python's `gettext` refuses catalogs whose header is not in
their charset), reduced to sentence-like pairs (`is_sentence` on both sides,
translation not equal to the source), de-duplicated by normalised English
(`english_key`; the translation of the first catalog in path order is kept)
and split train/dev/test by a hash of that key, so an English sentence falls
in the same split for every language and X->En and En->X test sets never
share a sentence with a training set. Each pair names the Debian package that
ships its catalog (`/var/lib/dpkg/info/*.list`) and that package's licence
(the first `License:` field of `/usr/share/doc/<package>/copyright`, else
`summarise_licence` of its text, else "unknown"). Catalogs of names (`iso_*`: countries,
languages, currencies; `xkeyboard-config`: keyboard layouts;
`shared-mime-info`: file types) are left out: names are not sentences.

Only the first `max_train_pairs` train pairs of a language (in id order,
i.e. by a SHA-256 of the English key, the same order for every language)
are written, to keep the committed text small; dev and test are written
whole; `max_train_pairs=None` (CLI: `--max-train-pairs 0`) writes all.

Output (sorted, no timestamps: the same catalogs give the same bytes):

    <output>/<lang>/{train,dev,test}.jsonl.xz   one JSON object a line:
        {"id", "source_language": "en",
        "target_language", "en", <lang>, "package", "licence", "catalog", "split"}
    <output>/summary.json   pairs per language, split (all found and written)
                            and package, licences, catalog digests, skipped
                            catalogs and entries
"""

import hashlib
import json
import lzma
import re
import struct
import unicodedata
from pathlib import Path

LOCALE_ROOT = "/usr/share/locale"
DPKG_INFO = "/var/lib/dpkg/info"
DOC_ROOT = "/usr/share/doc"
PARALLEL_TEXT = Path(__file__).resolve().parents[2] / "tfrecords" / "parallel"
SAMPLE_LANGUAGES = ("de", "es", "fr", "it")
EXCLUDED_CATALOG_PREFIXES = ("iso_", "xkeyboard-config", "shared-mime-info")
SPLIT_PERCENT = (("train", 90), ("dev", 5), ("test", 5))  # by hash of the English key
SPLITS = tuple(name for name, _ in SPLIT_PERCENT)
MIN_WORDS, MAX_WORDS = 3, 25
MIN_LETTER_FRACTION = 0.8  # of the non-space characters
# Train pairs written per language (the first by id); dev and test are whole.
MAX_TRAIN_PAIRS = 4000
SUFFIX = ".jsonl.xz"
# xz (stdlib lzma, one thread, no timestamps: the same text gives the same
# bytes); ~35% smaller than gzip -9 on this text.
XZ_PRESET = 9 | lzma.PRESET_EXTREME
FORMAT_VERSION = 2
# Format specifiers (%s, {0}, $VAR), markup and entities, paths, URLs,
# accelerators (_File, &Open), escapes and layout characters.
_FORBIDDEN = set("%{}$<>/\\=@#|*`[]~^_&\n\t\r")
_MO_MAGIC = {b"\xde\x12\x04\x95": "<", b"\x95\x04\x12\xde": ">"}
_CHARSET = re.compile(rb"charset=([A-Za-z0-9_.:-]+)")


class CatalogError(ValueError):
    """A .mo file that cannot be read; names the file and what is wrong."""


def read_mo(path):
    """The singular messages of a compiled gettext catalog.

    Returns ([(msgid, msgstr)] without the header entry, with any msgctxt
    removed, in file order; plural entries left out, number of entries
    not decodable in the catalog's charset). Raises CatalogError.
    """
    data = Path(path).read_bytes()
    order = _MO_MAGIC.get(data[:4])
    if order is None or len(data) < 20:
        raise CatalogError(f"{path}: not a .mo file (magic {data[:4].hex()})")
    _, count, originals, translations = struct.unpack(order + "4I", data[4:20])

    def string(table, index):
        at = table + 8 * index
        if at + 8 > len(data):
            raise CatalogError(
                f"{path}: entry {index}: table at byte {at} is beyond the end ({len(data)} bytes)"
            )
        length, offset = struct.unpack(order + "2I", data[at : at + 8])
        if offset + length > len(data):
            raise CatalogError(
                f"{path}: entry {index}: string at bytes {offset}-{offset + length} is beyond the end ({len(data)} bytes)"
            )
        return data[offset : offset + length]

    raw = [(string(originals, index), string(translations, index)) for index in range(count)]
    header = next((msgstr for msgid, msgstr in raw if msgid == b""), b"")
    found = _CHARSET.search(header)
    charset = found.group(1).decode("ascii") if found else "utf-8"
    entries, undecodable = [], 0
    for msgid, msgstr in raw:
        if msgid == b"" or b"\0" in msgid:  # header, plural forms
            continue
        try:
            entries.append((msgid.decode(charset).split("\x04")[-1], msgstr.decode(charset)))
        except (UnicodeDecodeError, LookupError):
            undecodable += 1
    return entries, undecodable


def is_sentence(text):
    """Whether `text` reads as a sentence: MIN_WORDS-MAX_WORDS words, starts
    with a letter, mostly letters, no format specifier, markup, path,
    accelerator, command-line option or control character."""
    words = text.split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS or not text[0].isalpha():
        return False
    if any(char in _FORBIDDEN or unicodedata.category(char)[0] == "C" for char in text):
        return False
    if any(word.startswith("-") for word in words):
        return False
    visible = "".join(words)
    return sum(char.isalpha() for char in visible) >= MIN_LETTER_FRACTION * len(visible)


def english_key(text):
    """What makes two English sources the same sentence: case-folded words,
    punctuation dropped ("Cannot open file." == "cannot open file")."""
    return " ".join(re.findall(r"\w+", text.casefold()))


def split_of(english):
    """ "train", "dev" or "test", fixed by a hash of `english_key(english)`."""
    bucket = int(hashlib.sha256(english_key(english).encode("utf-8")).hexdigest(), 16) % 100
    for name, percent in SPLIT_PERCENT:
        if bucket < percent:
            return name
        bucket -= percent
    raise AssertionError("SPLIT_PERCENT must add up to 100")


def pair_id(language, english):
    return f"{language}-{hashlib.sha256(english_key(english).encode('utf-8')).hexdigest()[:12]}"


def package_index(dpkg_info=DPKG_INFO, suffix=".mo"):
    """{installed file ending in `suffix`: Debian package} from dpkg's file lists."""
    owners = {}
    for listing in sorted(Path(dpkg_info).glob("*.list")) if Path(dpkg_info).is_dir() else []:
        package = listing.stem.split(":")[0]  # "libc6:amd64" -> "libc6"
        for line in listing.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.endswith(suffix):
                owners.setdefault(line, package)
    return owners


def licence_of(package, doc_root=DOC_ROOT):
    """The package's licence from `doc_root/<package>/copyright`: its first
    `License:` field, else `summarise_licence` of its text, else "unknown"."""
    path = Path(doc_root) / package / "copyright"
    if package == "unknown" or not path.is_file():
        return "unknown"
    text = path.read_text(encoding="utf-8", errors="replace")
    for line in text.splitlines():
        if line.startswith("License:") and line[len("License:") :].strip():
            return line[len("License:") :].strip()
    return summarise_licence(text)


def summarise_licence(text):
    """A licence name from free-form copyright text: the first GNU (L)GPL it
    cites with the version near it ("LGPL-2.1+"), else the first
    /usr/share/common-licenses/ file it names, else "unknown"."""
    text = " ".join(text.split())
    cited = re.search(r"GNU (Lesser |Library )?General Public License", text)
    if cited is None:
        common = re.search(r"/usr/share/common-licenses/([\w.+-]*\w)", text)
        return common.group(1) if common else "unknown"
    around = text[max(0, cited.start() - 300) : cited.end() + 300]
    version = re.search(r"version (\d+(?:\.\d+)?)", around)
    name = "LGPL" if cited.group(1) else "GPL"
    if version is None:
        return name
    return f"{name}-{version.group(1)}" + ("+" if "any later version" in around else "")


def catalog_files(locale_root, language):
    """The language's catalogs in path order, those of names left out."""
    folder = Path(locale_root) / language / "LC_MESSAGES"
    files = sorted(folder.glob("*.mo")) if folder.is_dir() else []
    return [path for path in files if not path.name.startswith(EXCLUDED_CATALOG_PREFIXES)]


def extract_pairs(language, locale_root=LOCALE_ROOT, packages=None, doc_root=DOC_ROOT):
    """Sentence pairs of one language -> (pair dicts sorted by id, report).

    `packages` maps catalog paths to packages (`package_index()`); the
    report gives the catalog digest and the skipped catalogs and entries.
    """
    packages = package_index() if packages is None else packages
    files = catalog_files(locale_root, language)
    if not files:
        raise FileNotFoundError(
            f"no catalogs for language {language!r} in {Path(locale_root) / language / 'LC_MESSAGES'}"
        )
    pairs, digest, skipped, licences = {}, hashlib.sha256(), [], {}
    for path in files:
        try:
            entries, undecodable = read_mo(path)
        except CatalogError as error:
            skipped.append({"catalog": str(path), "reason": str(error)})
            continue
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
        if undecodable:
            skipped.append(
                {
                    "catalog": str(path),
                    "reason": f"{undecodable} entries not decodable in the catalog's charset",
                }
            )
        package = packages.get(str(path), "unknown")
        licence = licences.setdefault(package, licence_of(package, doc_root))
        for english, translation in entries:
            key = english_key(english)
            if key in pairs or not (is_sentence(english) and is_sentence(translation)):
                continue
            if english_key(translation) == key:
                continue
            pairs[key] = {
                "id": pair_id(language, english),
                "source_language": "en",
                "target_language": language,
                "en": english,
                language: translation,
                "package": package,
                "licence": licence,
                "catalog": path.stem,
                "split": split_of(english),
            }
    report = {
        "catalogs": len(files),
        "catalog_digest": digest.hexdigest()[:16],
        "skipped": skipped,
    }
    return sorted(pairs.values(), key=lambda pair: pair["id"]), report


def write_parallel_text(
    output=PARALLEL_TEXT,
    languages=SAMPLE_LANGUAGES,
    locale_root=LOCALE_ROOT,
    dpkg_info=DPKG_INFO,
    doc_root=DOC_ROOT,
    max_train_pairs=MAX_TRAIN_PAIRS,
    max_eval_pairs=None,
):
    """Extracts each language's pairs into `output` (see the module docstring):
    the first `max_train_pairs` train pairs and `max_eval_pairs` dev and test
    pairs by id (None or 0: all). Returns the summary dict (also
    `output/summary.json`)."""
    if max_train_pairs is not None and max_train_pairs < 0:
        raise ValueError(f"max_train_pairs must be >= 0 (0: all), not {max_train_pairs}")
    if max_eval_pairs is not None and max_eval_pairs < 0:
        raise ValueError(f"max_eval_pairs must be >= 0 (0: all), not {max_eval_pairs}")
    max_train_pairs, max_eval_pairs = max_train_pairs or None, max_eval_pairs or None
    packages = package_index(dpkg_info)
    summary = {
        "format_version": FORMAT_VERSION,
        "source": f"{locale_root}/<lang>/LC_MESSAGES/*.mo (gettext catalogs of the Debian image)",
        "excluded_catalogs": [prefix + "*" for prefix in EXCLUDED_CATALOG_PREFIXES],
        "split_percent": dict(SPLIT_PERCENT),
        "words": [MIN_WORDS, MAX_WORDS],
        "max_train_pairs": max_train_pairs,
        "languages": {},
        "licences": {},
    }
    if max_eval_pairs is not None:  # absent: dev and test whole (text made before the cap)
        summary["max_eval_pairs"] = max_eval_pairs
    for language in sorted(languages):
        pairs, report = extract_pairs(language, locale_root, packages, doc_root)
        folder = Path(output) / language
        folder.mkdir(parents=True, exist_ok=True)
        written = {}
        for split in SPLITS:
            chosen = [pair for pair in pairs if pair["split"] == split]
            cap = max_train_pairs if split == "train" else max_eval_pairs
            chosen = chosen[:cap]  # pairs are sorted by id; a cap of None keeps all
            written[split] = len(chosen)
            lines = "".join(json.dumps(pair, ensure_ascii=False) + "\n" for pair in chosen)
            (folder / f"{split}{SUFFIX}").write_bytes(
                lzma.compress(
                    lines.encode("utf-8"),
                    format=lzma.FORMAT_XZ,
                    check=lzma.CHECK_CRC64,
                    preset=XZ_PRESET,
                )
            )
        packages_used = {}
        for pair in pairs:
            packages_used[pair["package"]] = packages_used.get(pair["package"], 0) + 1
            summary["licences"][pair["package"]] = pair["licence"]
        summary["languages"][language] = {
            "pairs": len(pairs),
            "splits": {split: sum(pair["split"] == split for pair in pairs) for split in SPLITS},
            "written": written,
            "packages": dict(sorted(packages_used.items(), key=lambda item: (-item[1], item[0]))),
            **report,
        }
    summary["licences"] = dict(sorted(summary["licences"].items()))
    (Path(output) / "summary.json").write_text(
        json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return summary


def read_pairs(language, split, directory=PARALLEL_TEXT):
    """The pairs of `directory/<language>/<split>.jsonl.xz` as dicts (train:
    the first `summary.json["max_train_pairs"]` by id, unless made with all)."""
    path = Path(directory) / language / f"{split}{SUFFIX}"
    if not path.is_file():
        raise FileNotFoundError(
            f"no parallel text {path}; make it with `keras-slam parallel-text --output {directory}`"
        )
    with lzma.open(path, "rt", encoding="utf-8") as file:
        return [json.loads(line) for line in file]
