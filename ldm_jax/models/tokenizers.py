"""Text -> fixed-length token ids for the text encoders, from vocabulary files on disk.

- `bert_tokenizer`: bert-base-uncased WordPiece (LDM's BERTTokenizer): [CLS] text [SEP], padded with
  [PAD] (id 0) to `max_length`, truncated keeping [SEP].
- `clip_tokenizer`: CLIP byte-level BPE (SD v1's CLIPTokenizer): <|startoftext|> text <|endoftext|>,
  padded with <|endoftext|> to 77 tokens, truncated keeping <|endoftext|>.
- `open_clip_tokenizer`: the same BPE as `open_clip.tokenize` (SD 2), padded with 0.

Built on the `tokenizers` package; nothing is downloaded. CLIP vocabularies are read either from the
Hugging Face files `vocab.json` + `merges.txt` or from OpenAI's `bpe_simple_vocab_16e6.txt.gz`.
"""
import gzip
import html
import json
import pathlib
import unicodedata
from typing import Callable, Sequence

import numpy as np
import tokenizers
from tokenizers import Regex, decoders, normalizers, pre_tokenizers, processors

BERT_VOCAB = "vocab.txt"
BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")
CLIP_VOCAB, CLIP_MERGES = "vocab.json", "merges.txt"
OPENAI_BPE = "bpe_simple_vocab_16e6.txt.gz"

CLIP_BOS, CLIP_EOS = "<|startoftext|>", "<|endoftext|>"
# CLIP's word split: contractions, letter runs, single digits, runs of other non-space characters.
CLIP_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
# OpenAI's merges file holds more merges than CLIP uses: 49152 - 256 - 2 of them, after a header line.
_OPENAI_NUM_MERGES = 49152 - 256 - 2


def _ftfy_like_table() -> dict[int, str]:
    """The character fixes of ftfy.fix_text that CLIP's text cleaning relies on most, as one table.

    Curly quotes -> straight quotes, halfwidth/fullwidth forms and the ideographic space -> their
    standard forms, Latin ligatures (e.g. U+FB01 'fi') -> letters. (ftfy's mojibake repair is not
    reproduced; ftfy itself is not a dependency.)
    """
    table = {ord(c): "'" for c in "\u02bc\u2018\u2019\u201a\u201b"}
    table.update({ord(c): '"' for c in "\u201c\u201d\u201e\u201f"})
    table[0x3000] = " "
    ligatures = [*range(0xFB00, 0xFB07), 0x132, 0x133, *range(0x1C4, 0x1CD), *range(0x1F1, 0x1F4)]
    for code in [*range(0xFF01, 0xFFF0), *ligatures]:
        alternate = unicodedata.normalize("NFKC", chr(code))
        if alternate != chr(code):
            table[code] = alternate
    return table


_CLIP_TEXT_FIXES = _ftfy_like_table()


def clean_clip_text(text: str) -> str:
    """OpenAI CLIP's basic_clean before BPE: ftfy-like character fixes, HTML unescaping twice, strip."""
    return html.unescape(html.unescape(text.translate(_CLIP_TEXT_FIXES))).strip()


class TextTokenizer:
    """Strings -> (N, max_length) int32 token ids: special tokens added, truncated, padded."""

    def __init__(self, backend: tokenizers.Tokenizer, max_length: int, *,
                 clean: Callable[[str], str] | None = None):
        self.backend = backend
        self.max_length = max_length
        self._clean = clean

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def __call__(self, texts: str | Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            texts = [texts]
        if self._clean is not None:
            texts = [self._clean(t) for t in texts]
        encodings = self.backend.encode_batch(list(texts))
        return np.asarray([e.ids for e in encodings], np.int32).reshape(len(texts), self.max_length)


def _find(path: str | pathlib.Path, name: str, expected: str) -> pathlib.Path:
    """`path` itself if it is a file, else `path/name`; a clear error when it is missing."""
    path = pathlib.Path(path)
    candidate = path if path.is_file() else path / name
    if not candidate.is_file():
        raise FileNotFoundError(f"tokenizer file not found: {candidate} (expected {expected})")
    return candidate


def bert_tokenizer(path: str | pathlib.Path, max_length: int = 77) -> TextTokenizer:
    """The bert-base-uncased WordPiece tokenizer from `vocab.txt` (a file, or a folder holding it)."""
    vocab_file = _find(path, BERT_VOCAB, "a WordPiece vocab.txt with one token per line, as in bert-base-uncased")
    tokens = vocab_file.read_text(encoding="utf-8").splitlines()
    vocab = {token: i for i, token in enumerate(tokens)}
    missing = [special for special in BERT_SPECIAL_TOKENS if special not in vocab]
    if missing:
        raise ValueError(f"{vocab_file} lacks the special token(s) {', '.join(missing)}")
    backend = tokenizers.Tokenizer(tokenizers.models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    backend.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                                    lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    backend.add_special_tokens(["[UNK]", "[CLS]", "[SEP]", "[PAD]"])
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    backend.enable_truncation(max_length)
    backend.enable_padding(length=max_length, pad_id=vocab["[PAD]"], pad_token="[PAD]")
    return TextTokenizer(backend, max_length)


def write_word_vocab(words: Sequence[str], path: str | pathlib.Path) -> pathlib.Path:
    """A `vocab.txt` for `bert_tokenizer` holding whole words: a word-level tokenizer (unknown words
    become [UNK]) for small datasets, e.g. the built-in shapes' captions. Specials come first."""
    words = [w for w in words if w not in BERT_SPECIAL_TOKENS]
    bad = [w for w in words if not w or w != w.lower() or any(c.isspace() for c in w)]
    if bad or len(set(words)) != len(words):
        raise ValueError(f"vocabulary words must be unique, lowercase and without spaces, got {bad or words}")
    path = pathlib.Path(path)
    path.write_text("\n".join([*BERT_SPECIAL_TOKENS, *words]) + "\n", encoding="utf-8")
    return path


def _byte_level_alphabet() -> list[str]:
    """CLIP's 256 single-character byte tokens in vocabulary order (GPT-2's bytes_to_unicode).

    Printable bytes stand for themselves and come first; the others map, in byte order, to chr(256 + n).
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1),
                 *range(ord("\u00ae"), ord("\u00ff") + 1)]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(256 - len(printable))]


def _read_openai_bpe(merges_file: pathlib.Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary and merges of OpenAI's simple tokenizer, rebuilt from its gzipped merges file."""
    with gzip.open(merges_file, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1:_OPENAI_NUM_MERGES + 1] if line.strip()]
    bad = [m for m in merges if len(m) != 2]
    if bad:
        raise ValueError(f"{merges_file} is not a BPE merges file: line {' '.join(bad[0])!r} is not a pair")
    alphabet = _byte_level_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["".join(m) for m in merges] + [CLIP_BOS, CLIP_EOS]
    return {token: i for i, token in enumerate(tokens)}, merges


def _read_hf_bpe(vocab_file: pathlib.Path, merges_file: pathlib.Path):
    vocab = json.loads(vocab_file.read_text(encoding="utf-8"))
    lines = merges_file.read_text(encoding="utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines if line and not line.startswith("#version")]
    bad = [m for m in merges if len(m) != 2]
    if bad:
        raise ValueError(f"{merges_file} is not a BPE merges file: line {bad[0]!r} is not a pair")
    return vocab, merges


def _clip_vocab(path: str | pathlib.Path):
    path = pathlib.Path(path)
    if path.is_file():
        if path.name.endswith(".gz"):
            return _read_openai_bpe(path)
        raise ValueError(f"{path}: expected a folder with {CLIP_VOCAB} + {CLIP_MERGES}, or OpenAI's {OPENAI_BPE}")
    if (path / CLIP_VOCAB).is_file() or (path / CLIP_MERGES).is_file():
        expected = f"{CLIP_VOCAB} and {CLIP_MERGES} together (Hugging Face CLIPTokenizer files)"
        return _read_hf_bpe(_find(path, CLIP_VOCAB, expected), _find(path, CLIP_MERGES, expected))
    if (path / OPENAI_BPE).is_file():
        return _read_openai_bpe(path / OPENAI_BPE)
    raise FileNotFoundError(f"tokenizer files not found in {path}: expected {CLIP_VOCAB} + {CLIP_MERGES} "
                            f"(Hugging Face) or {OPENAI_BPE} (OpenAI / open_clip)")


def clip_tokenizer(path: str | pathlib.Path, max_length: int = 77, *, pad_token_id: int | None = None) -> TextTokenizer:
    """CLIP's BPE tokenizer; padding with <|endoftext|> unless `pad_token_id` is given.

    `path` is a folder with vocab.json + merges.txt or bpe_simple_vocab_16e6.txt.gz, or that .gz file.
    """
    vocab, merges = _clip_vocab(path)
    for special in (CLIP_BOS, CLIP_EOS):
        if special not in vocab:
            raise ValueError(f"the CLIP vocabulary at {path} lacks the special token {special}")
    model = tokenizers.models.BPE(vocab=vocab, merges=merges, unk_token=CLIP_EOS, continuing_subword_prefix="",
                                  end_of_word_suffix="</w>", fuse_unk=False)
    backend = tokenizers.Tokenizer(model)
    backend.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                               normalizers.Lowercase()])
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(CLIP_PATTERN), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([CLIP_BOS, CLIP_EOS])
    bos, eos = vocab[CLIP_BOS], vocab[CLIP_EOS]
    backend.post_processor = processors.TemplateProcessing(
        single=f"{CLIP_BOS} $A {CLIP_EOS}", special_tokens=[(CLIP_BOS, bos), (CLIP_EOS, eos)])
    backend.enable_truncation(max_length)
    pad_id = eos if pad_token_id is None else pad_token_id
    backend.enable_padding(length=max_length, pad_id=pad_id, pad_token=CLIP_EOS if pad_token_id is None else "<pad>")
    return TextTokenizer(backend, max_length, clean=clean_clip_text)


def open_clip_tokenizer(path: str | pathlib.Path, context_length: int = 77) -> TextTokenizer:
    """`open_clip.tokenize`'s output (SD 2's FrozenOpenCLIPEmbedder): CLIP BPE padded with 0."""
    return clip_tokenizer(path, context_length, pad_token_id=0)
