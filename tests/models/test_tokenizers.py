"""BERT WordPiece and CLIP BPE tokenizers on tiny vocabulary files."""
import gzip
import json

import numpy as np
import pytest

from ldm_jax.models import tokenizers

# A few CLIP-style merges: '</w>' is attached to the last character of a word.
MERGES = [("h", "e"), ("l", "l"), ("he", "ll"), ("hell", "o</w>"), ("w", "o"), ("r", "l"), ("wo", "rl"),
          ("worl", "d</w>"), ("a", "b")]


def _write_openai_bpe(folder):
    path = folder / tokenizers.OPENAI_BPE
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(" ".join(m) for m in MERGES) + "\n")
    return path


def _openai_vocab():
    """The OpenAI vocabulary order: 256 byte characters, the same with '</w>', merges, BOS, EOS."""
    alphabet = tokenizers._byte_level_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["".join(m) for m in MERGES] + [
        "<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}


def _naive_bpe(word, merges):
    """Plain BPE: merge the lowest-ranked adjacent pair until none is in the merge list."""
    ranks = {m: i for i, m in enumerate(merges)}
    symbols = list(word[:-1]) + [word[-1] + "</w>"]
    while len(symbols) > 1:
        pairs = [(ranks.get(p, len(ranks)), i) for i, p in enumerate(zip(symbols, symbols[1:]))]
        rank, i = min(pairs)
        if rank == len(ranks):
            break
        symbols[i:i + 2] = [symbols[i] + symbols[i + 1]]
    return symbols


def test_clip_ids_padding_and_both_file_formats(tmp_path):
    vocab = _openai_vocab()
    bos, eos = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
    assert (bos, eos) == (512 + len(MERGES), 513 + len(MERGES))
    openai_dir = tmp_path / "openai"
    openai_dir.mkdir()
    _write_openai_bpe(openai_dir)
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    (hf_dir / "vocab.json").write_text(json.dumps(vocab))
    (hf_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in MERGES) + "\n")

    text = "  Hello   WORLD! abba &amp; 42"
    # SD v1's CLIPTokenizer keeps "&amp;" as written; open_clip unescapes it (below).
    expected_words = ["hello</w>", "world</w>", "!</w>", "ab", "b", "a</w>", "&</w>", "a", "m", "p</w>", ";</w>",
                      "4</w>", "2</w>"]
    expected = [bos] + [vocab[w] for w in expected_words] + [eos]
    for source in (openai_dir, openai_dir / tokenizers.OPENAI_BPE, hf_dir):
        ids = tokenizers.clip_tokenizer(source)([text, ""])
        assert ids.shape == (2, 77) and ids.dtype == np.int32
        assert list(ids[0, :len(expected)]) == expected
        assert (ids[0, len(expected):] == eos).all()  # SD v1 pads with EOS
        assert list(ids[1]) == [bos] + [eos] * 76  # "" -> BOS then EOS padding, like the fixtures' uncond
    open_clip_ids = tokenizers.open_clip_tokenizer(openai_dir)([text])
    expected = [bos] + [vocab[w] for w in expected_words[:7] + ["4</w>", "2</w>"]] + [eos]
    assert list(open_clip_ids[0, :len(expected)]) == expected
    assert (open_clip_ids[0, len(expected):] == 0).all()  # open_clip pads with 0


def test_clip_bpe_agrees_with_naive_merging(tmp_path):
    _write_openai_bpe(tmp_path)
    vocab = _openai_vocab()
    tokenizer = tokenizers.clip_tokenizer(tmp_path, max_length=16)
    rng = np.random.default_rng(0)
    for _ in range(30):
        word = "".join(rng.choice(list("helowrdab"), rng.integers(1, 9)))
        expected = [vocab[s] for s in _naive_bpe(word, MERGES)]
        ids = tokenizer(word)[0]
        assert list(ids[1:1 + len(expected)]) == expected, word


def test_clip_truncation_keeps_eos(tmp_path):
    _write_openai_bpe(tmp_path)
    vocab = _openai_vocab()
    ids = tokenizers.clip_tokenizer(tmp_path)(["hello " * 100])[0]
    assert ids[0] == vocab["<|startoftext|>"] and ids[-1] == vocab["<|endoftext|>"]
    assert (ids[1:-1] == vocab["hello</w>"]).all() and len(ids) == 77
    short = tokenizers.open_clip_tokenizer(tmp_path, context_length=5)(["hello world hello world"])[0]
    assert list(short) == [vocab["<|startoftext|>"], vocab["hello</w>"], vocab["world</w>"], vocab["hello</w>"],
                           vocab["<|endoftext|>"]]


def test_clip_missing_files_name_what_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab.json.*merges.txt.*bpe_simple_vocab_16e6.txt.gz"):
        tokenizers.clip_tokenizer(tmp_path)
    (tmp_path / "vocab.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="merges.txt"):
        tokenizers.clip_tokenizer(tmp_path)


BERT_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "##s", "sat", "on", "mat", ".", "a",
              "cafe", ","]


def test_bert_wordpiece_ids_padding_truncation(tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join(BERT_VOCAB) + "\n")
    index = {t: i for i, t in enumerate(BERT_VOCAB)}
    tokenizer = tokenizers.bert_tokenizer(tmp_path)
    ids = tokenizer(["The CATS sat on a  mat.", "Café, dog"])
    assert ids.shape == (2, 77)
    first = ["[CLS]", "the", "cat", "##s", "sat", "on", "a", "mat", ".", "[SEP]"]
    assert list(ids[0, :10]) == [index[t] for t in first] and (ids[0, 10:] == 0).all()
    # Uncased: accents stripped and lower-cased; an unknown word is [UNK].
    assert list(ids[1, :5]) == [index[t] for t in ["[CLS]", "cafe", ",", "[UNK]", "[SEP]"]]
    short = tokenizers.bert_tokenizer(tmp_path / "vocab.txt", max_length=5)("the cat sat on the mat")
    assert list(short[0]) == [index[t] for t in ["[CLS]", "the", "cat", "sat", "[SEP]"]]


def test_bert_missing_vocab(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab.txt"):
        tokenizers.bert_tokenizer(tmp_path)
    (tmp_path / "vocab.txt").write_text("the\ncat\n")
    with pytest.raises(ValueError, match=r"\[UNK\]"):
        tokenizers.bert_tokenizer(tmp_path)


def test_clip_text_cleaning_like_open_clip():
    # ftfy's quote uncurling, width and ligature fixes, HTML unescaping, one space, lower case: open_clip's
    # cleaning.
    assert tokenizers.clean_open_clip_text("  \u201cdon\u2019t\u201d &amp;amp; \uff21\uff22\u3000\ufb01ne ") == \
        '"don\'t" & ab fine'
