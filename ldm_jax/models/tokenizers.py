"""Text -> fixed-length token ids for the text encoders, from vocabulary files on disk.

- `bert_tokenizer`: bert-base-uncased WordPiece (LDM's BERTTokenizer): [CLS] text [SEP], padded with
  [PAD] (id 0) to `max_length`, truncated keeping [SEP].
- `clip_tokenizer`: CLIP byte-level BPE as Hugging Face's `CLIPTokenizer` (SD v1):
  <|startoftext|> text <|endoftext|>, padded with <|endoftext|> to 77 tokens, truncated keeping
  <|endoftext|>. Like that tokenizer it only NFC-normalises, collapses whitespace and lower-cases.
- `open_clip_tokenizer`: `open_clip.tokenize` (SD 2): the same BPE after open_clip's text cleaning
  (ftfy, HTML unescaping), padded with 0.

Built on the `tokenizers` package; nothing is downloaded. CLIP vocabularies are read either from the
Hugging Face files `vocab.json` + `merges.txt` or from OpenAI's `bpe_simple_vocab_16e6.txt.gz`.
"""
import gzip
import html
import json
import pathlib
import re
import unicodedata
from typing import Sequence

import ftfy
import numpy as np
import tokenizers
from tokenizers import Regex, decoders, normalizers, pre_tokenizers, processors

BERT_VOCAB = "vocab.txt"
BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")
CLIP_VOCAB, CLIP_MERGES = "vocab.json", "merges.txt"
OPENAI_BPE = "bpe_simple_vocab_16e6.txt.gz"

CLIP_BOS, CLIP_EOS = "<|startoftext|>", "<|endoftext|>"
# How open_clip writes the same two tokens when it finds them in a prompt.
OPEN_CLIP_BOS, OPEN_CLIP_EOS = "<start_of_text>", "<end_of_text>"
# CLIP's word split: contractions, letter runs, single digits, runs of other non-space characters.
CLIP_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
# OpenAI's merges file holds more merges than CLIP uses: 49152 - 256 - 2 of them, after a header line.
_OPENAI_NUM_MERGES = 49152 - 256 - 2


def clean_open_clip_text(text: str) -> str:
    """open_clip's text cleaning before BPE (its default, 'lower'): ftfy.fix_text, HTML unescaping
    twice, whitespace runs -> one space, stripped, lower-cased (Python's `str.lower`)."""
    text = ftfy.fix_text(text)
    return " ".join(html.unescape(html.unescape(text)).split()).lower()


class TextTokenizer:
    """Strings -> (N, max_length) int32 token ids: special tokens added, truncated, padded."""

    def __init__(self, backend: tokenizers.Tokenizer, max_length: int):
        self.backend = backend
        self.max_length = max_length

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def __call__(self, texts: str | Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            texts = [texts]
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
    # Written in a prompt these are the tokens themselves, as in BertTokenizer ([MASK] where the vocab has it).
    backend.add_special_tokens([t for t in ("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]") if t in vocab])
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


def _clip_bpe(path: str | pathlib.Path) -> tuple[tokenizers.Tokenizer, int, int]:
    """A tokenizer with CLIP's BPE model and byte-level alphabet (no text handling yet), BOS id, EOS id."""
    vocab, merges = _clip_vocab(path)
    for special in (CLIP_BOS, CLIP_EOS):
        if special not in vocab:
            raise ValueError(f"the CLIP vocabulary at {path} lacks the special token {special}")
    model = tokenizers.models.BPE(vocab=vocab, merges=merges, unk_token=CLIP_EOS, continuing_subword_prefix="",
                                  end_of_word_suffix="</w>", fuse_unk=False)
    backend = tokenizers.Tokenizer(model)
    backend.decoder = decoders.ByteLevel()
    return backend, vocab[CLIP_BOS], vocab[CLIP_EOS]


def clip_tokenizer(path: str | pathlib.Path, max_length: int = 77) -> TextTokenizer:
    """CLIP's BPE tokenizer as Hugging Face's `CLIPTokenizer` (SD v1's), padded with <|endoftext|>.

    That is transformers' tokenizers-backed CLIPTokenizer (the only one since transformers 5): no ftfy
    or HTML unescaping, unlike open_clip's and transformers 4's Python one (which ran ftfy.fix_text).
    `path` is a folder with vocab.json + merges.txt or bpe_simple_vocab_16e6.txt.gz, or that .gz file.
    """
    backend, bos, eos = _clip_bpe(path)
    backend.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                               normalizers.Lowercase()])
    # As CLIPTokenizer's: the special tokens' text is one word (an upper-case one, lower-cased by now, is
    # not the special token), and the byte-level step splits words again with GPT-2's pattern, which
    # changes only those words.
    words = "|".join([re.escape(CLIP_BOS), re.escape(CLIP_EOS), CLIP_PATTERN])
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(words), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    backend.add_special_tokens([CLIP_BOS, CLIP_EOS])  # matched in the raw prompt
    backend.post_processor = processors.TemplateProcessing(
        single=f"{CLIP_BOS} $A {CLIP_EOS}", special_tokens=[(CLIP_BOS, bos), (CLIP_EOS, eos)])
    backend.enable_truncation(max_length)
    backend.enable_padding(length=max_length, pad_id=eos, pad_token=CLIP_EOS)
    return TextTokenizer(backend, max_length)


class OpenClipTokenizer(TextTokenizer):
    """`open_clip.tokenize`: open_clip's cleaning in Python, then CLIP's BPE; <start_of_text> and
    <end_of_text> in a prompt are those tokens; truncated keeping the EOS token, padded with 0."""

    def __init__(self, backend: tokenizers.Tokenizer, max_length: int, bos: int, eos: int):
        super().__init__(backend, max_length)
        self.bos, self.eos = bos, eos
        self._specials = {OPEN_CLIP_BOS: bos, OPEN_CLIP_EOS: eos}

    def _pieces(self, text: str) -> list[str]:
        """`text` split around the special tokens open_clip's regex finds in it.

        Its regex tries them first wherever a match can start: at the start, after a space, a letter,
        a digit or a special token; after other punctuation a run of punctuation takes the "<".
        """
        pieces, start, at = [], 0, 0
        while True:
            found = [(i, s) for s in self._specials if (i := text.find(s, at)) >= 0]
            if not found:
                return [*pieces, text[start:]]
            i, special = min(found)
            if i == start or text[i - 1] == " " or unicodedata.category(text[i - 1])[0] in "LN":
                pieces += [text[start:i], special]
                start = at = i + len(special)
            else:
                at = i + 1

    def __call__(self, texts: str | Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            texts = [texts]
        # U+0345 folds to a letter but is none: open_clip's case-blind regex skips it like a space.
        pieces = [self._pieces(clean_open_clip_text(t).replace("\u0345", " ")) for t in texts]
        plain = [p for row in pieces for p in row if p not in self._specials]
        encoded = iter(self.backend.encode_batch(plain, add_special_tokens=False))
        ids = np.zeros((len(texts), self.max_length), np.int32)
        for row, text_pieces in zip(ids, pieces):
            tokens = [self.bos]
            for piece in text_pieces:
                tokens += [self._specials[piece]] if piece in self._specials else next(encoded).ids
            tokens = tokens[:self.max_length - 1] + [self.eos]
            row[:len(tokens)] = tokens
        return ids


def open_clip_tokenizer(path: str | pathlib.Path, context_length: int = 77) -> OpenClipTokenizer:
    """`open_clip.tokenize`'s output (SD 2's FrozenOpenCLIPEmbedder): CLIP BPE padded with 0."""
    backend, bos, eos = _clip_bpe(path)
    # The text is cleaned and lower-cased already; open_clip's regex ignores case, e.g. "'\u017f" is "'s".
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex("(?i)" + CLIP_PATTERN), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    return OpenClipTokenizer(backend, context_length, bos, eos)
