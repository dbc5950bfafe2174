"""Our tokenizers against the reference implementations, on real vocabularies and ~2,400 varied prompts.

- `clip_tokenizer` (SD v1) == Hugging Face's `transformers.CLIPTokenizer` built from vocab.json +
  merges.txt written from open_clip's `bpe_simple_vocab_16e6.txt.gz` (CLIP's real vocabulary), padded
  with <|endoftext|> and truncated to 77 as SD v1's FrozenCLIPEmbedder asks it to.
- `open_clip_tokenizer` (SD 2) == `open_clip.tokenize` (its own cleaning with ftfy, padded with 0),
  reading that .gz file itself.
- Both BPEs agree with each other on text that open_clip's cleaning leaves as it is.
- `bert_tokenizer` == `tokenizers.BertWordPieceTokenizer` and `transformers.BertTokenizer` (LDM's
  bert-base-uncased set-up: lower-cased, accents stripped) on a WordPiece vocabulary trained here.

open_clip's package `__init__` imports torchvision, which PyPI only has beside a CUDA torch, so its
`tokenizer.py` (which needs only torch, ftfy and regex) is loaded by itself from the installed package
(`pip install --no-deps open-clip-torch==3.3.0`).
"""
import gzip
import importlib.util
import json
import pathlib
import random
import unicodedata

import numpy as np
import pytest

from ldm_jax.models import tokenizers

pytest.importorskip("torch")  # open_clip's tokenizer returns torch tensors

transformers = pytest.importorskip("transformers")
from tokenizers import BertWordPieceTokenizer  # noqa: E402

CONTEXT = 77

WORDS = ("a photo of the an cat dog astronaut riding horse on moon painting by greg rutkowski trending artstation "
         "highly detailed portrait woman man city at night sky beautiful landscape mountain river forest sunset "
         "octane render unreal engine digital art oil canvas cinematic lighting hyperrealistic matte sharp focus "
         "illustration concept fantasy castle dragon flowers garden watercolor sketch children book cover").split()
# Accents, other scripts, emoji (with joiners, skin tones, flags), punctuation runs, numbers, contractions,
# HTML entities, what ftfy repairs (curly quotes, full width, ligatures, mojibake, terminal escapes),
# combining marks, and the special tokens of each tokenizer written into the prompt.
SPICE = ("café naïve Ærøskøbing Straße Ångström façade jalapeño crème brûlée São Paulo Dvořák Łódź İstanbul "
         "ΟΔΟΣ Ελληνικά Привет Ёлка 猫 東京タワー 한국어 山水画 日本語のテキスト مرحبا שלום नमस्ते ไทย "
         "🐱 👩‍🚀 🏳️‍🌈 👍🏽 🇯🇵 ❤️ 🎨🖌️ !!! ?! ... … — -- (( )) [[ ]] :) ;-) #art @user $% ^_^ *** ~~~ "
         "1024 3.5 1,000 4k 8K 1920x1080 ½ ² Ⅻ don't it's we'll they're I'm you've he'd DON'T O'Brien "
         "&amp; &lt; &gt; &quot; &#39; &eacute; &nbsp; &amp;amp; &#x1F600; &copy; &EACUTE; "
         "&amp;lt;b&amp;gt; <b>bold</b> "
         "“quoted” ‘single’ ＡＢＣ ｆｕｌｌ ﬁne ﬂower Ǆ cafÃ© â€œmojibakeâ€\x9d \x1b[31mred\x1b[0m "
         "e\u0301 n\u0303 x\u0345y ſ 'ſ ς ΣΑΣ \u200b \u200d \ufeff x\x00y "
         "<|endoftext|> <|startoftext|> <|ENDOFTEXT|> <end_of_text> <START_OF_TEXT> !<end_of_text> "
         "a<end_of_text>b <end_of_text><end_of_text> [MASK] [CLS] [SEP] [UNK] [PAD] [mask] ##ing").split(" ")
SEPARATORS = [" "] * 8 + ["", "  ", "\t", "\n", "\r\n", "\u00a0", "\u3000", " \u2003 ", "\u2028", "\x0b"]
# A few Unicode blocks for random-character prompts: Latin-1 and extensions, Greek/Cyrillic, kana,
# CJK, Hangul, Arabic, Devanagari, general punctuation, full width forms, emoji, control characters.
BLOCKS = [(0x20, 0x7F), (0xA0, 0x250), (0x370, 0x530), (0x3040, 0x3100), (0x4E00, 0x4F00), (0xAC00, 0xAD00),
          (0x600, 0x700), (0x900, 0x980), (0x2000, 0x2070), (0xFF00, 0xFFF0), (0x1F300, 0x1F700), (0x0, 0x20)]


def _prompts() -> list[str]:
    rng = random.Random(15)
    prompts = ["", " ", "\t\n ", "a", "A", "<|endoftext|>", "<end_of_text>", "the " * 100, "!" * 300,
               " ".join(WORDS)]
    for _ in range(1800):  # caption-like: words and spice joined by assorted whitespace
        n = rng.choice([1, 2, 3, 5, 8, 12, 20, 40, 90])
        pieces = [rng.choice(WORDS) if rng.random() < 0.6 else rng.choice(SPICE) for _ in range(n)]
        text = pieces[0] + "".join(rng.choice(SEPARATORS) + piece for piece in pieces[1:])
        if rng.random() < 0.1:
            text = rng.choice(SEPARATORS) + text + rng.choice(SEPARATORS)
        case = rng.random()
        text = text.upper() if case < 0.1 else text.title() if case < 0.2 else text
        prompts.append(text)
    for _ in range(600):  # random characters
        block = rng.choice(BLOCKS)
        prompts.append("".join(chr(rng.randrange(*block)) if rng.random() < 0.8 else rng.choice(SPICE)
                               for _ in range(rng.randint(1, 40))))
    return prompts


@pytest.fixture(scope="module")
def prompts():
    return _prompts()


@pytest.fixture(scope="module")
def open_clip_reference():
    """open_clip's tokenizer module, loaded without its package (see the module docstring)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None:
        pytest.skip("open_clip is not installed (pip install --no-deps open-clip-torch==3.3.0)")
    path = pathlib.Path(spec.submodule_search_locations[0]) / "tokenizer.py"
    module_spec = importlib.util.spec_from_file_location("open_clip_tokenizer_reference", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bpe_file(open_clip_reference) -> pathlib.Path:
    return pathlib.Path(open_clip_reference.default_bpe())


@pytest.fixture(scope="module")
def hf_clip_files(bpe_file, open_clip_reference, tmp_path_factory) -> pathlib.Path:
    """vocab.json + merges.txt as CLIP's Hugging Face checkpoints have them: the 256 byte characters,
    the same with '</w>', one token per merge, then <|startoftext|> and <|endoftext|>."""
    with gzip.open(bpe_file, "rt", encoding="utf-8") as f:
        merges = f.read().split("\n")[1:49152 - 256 - 2 + 1]  # the merges CLIP uses, after a header
    alphabet = list(open_clip_reference.bytes_to_unicode().values())
    tokens = alphabet + [c + "</w>" for c in alphabet] + [m.replace(" ", "") for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    assert len(tokens) == 49408
    folder = tmp_path_factory.mktemp("hf_clip")
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return folder


def _assert_same_ids(ours: np.ndarray, reference: np.ndarray, prompts: list[str], name: str):
    assert ours.shape == reference.shape == (len(prompts), CONTEXT) and ours.dtype == np.int32
    differ = np.flatnonzero((ours != reference).any(axis=1))
    shown = "\n".join(f"{prompts[i]!r}:\n  ours {ours[i].tolist()}\n  ref  {reference[i].tolist()}" for i in differ[:3])
    assert not len(differ), f"{name}: {len(differ)} of {len(prompts)} prompts differ, e.g.\n{shown}"


def test_prompts_cover_the_cases(prompts, open_clip_reference):
    assert len(prompts) >= 2000 and len(set(prompts)) > 1900
    ids = open_clip_reference.tokenize(prompts).numpy()
    lengths = (ids != 0).sum(axis=1)
    assert (lengths == CONTEXT).sum() > 100  # truncated
    assert (lengths == 2).sum() >= 3  # empty after cleaning
    assert sum(p != p.lower() for p in prompts) > 1000


def test_clip_equals_hf_clip_tokenizer(prompts, bpe_file, hf_clip_files):
    reference = transformers.CLIPTokenizer(vocab=str(hf_clip_files / "vocab.json"),
                                           merges=str(hf_clip_files / "merges.txt"))
    # SD v1's FrozenCLIPEmbedder call; CLIPTokenizer pads with <|endoftext|>.
    expected = np.asarray(reference(prompts, truncation=True, max_length=CONTEXT, padding="max_length")["input_ids"])
    eos = reference.convert_tokens_to_ids("<|endoftext|>")
    assert eos == 49407 and (expected[:, -1] == eos).all()
    for source in (hf_clip_files, bpe_file):  # both vocabulary formats
        ours = tokenizers.clip_tokenizer(source)(prompts)
        _assert_same_ids(ours, expected, prompts, f"clip_tokenizer({source.name})")


def test_open_clip_equals_open_clip_tokenize(prompts, bpe_file, open_clip_reference, hf_clip_files):
    expected = open_clip_reference.tokenize(prompts, context_length=CONTEXT).numpy()
    for source in (bpe_file, bpe_file.parent, hf_clip_files):
        ours = tokenizers.open_clip_tokenizer(source)(prompts)
        _assert_same_ids(ours, expected, prompts, f"open_clip_tokenizer({source.name})")
    # SimpleTokenizer at another context length: truncation still keeps <end_of_text> last.
    short = open_clip_reference.SimpleTokenizer(str(bpe_file), context_length=16)(prompts).numpy()
    ours = tokenizers.open_clip_tokenizer(bpe_file, context_length=16)(prompts)
    assert (ours == short).all()


def test_clip_bpe_agrees_with_open_clip_on_clean_text(prompts, bpe_file, open_clip_reference):
    """The two references differ only in text handling (open_clip cleans with ftfy and unescapes HTML,
    CLIPTokenizer does neither; their special tokens differ; open_clip's word split ignores case, so that
    "'\u017f" is "'s" and U+0345 no word): on text that open_clip's cleaning keeps as it is, the SD v1 and
    SD 2 paths give the same BPE, up to padding."""
    clean = open_clip_reference.get_clean_fn("lower")
    excluded = ("<|startoftext|>", "<|endoftext|>", "<start_of_text>", "<end_of_text>", "'\u017f", "\u0345")
    texts = sorted({clean(p) for p in prompts})
    texts = [t for t in texts if clean(t) == t and unicodedata.is_normalized("NFC", t)
             and not any(s in t for s in excluded)]
    assert len(texts) > 1200
    expected = open_clip_reference.tokenize(texts).numpy()
    eos = 49407  # <|endoftext|>, <end_of_text> to open_clip
    expected[(expected == 0) & (np.cumsum(expected == eos, axis=1) > 0)] = eos  # SD v1 pads with EOS
    _assert_same_ids(tokenizers.clip_tokenizer(bpe_file)(texts), expected, texts, "clip_tokenizer vs open_clip")


@pytest.fixture(scope="module")
def bert_vocab(prompts, tmp_path_factory) -> pathlib.Path:
    """A bert-base-uncased-like WordPiece vocabulary trained on half the prompts: the other half has
    words split into ##pieces and characters outside its alphabet ([UNK])."""
    trainer = BertWordPieceTokenizer(lowercase=True)
    trainer.train_from_iterator(prompts[::2], vocab_size=3000, min_frequency=2, limit_alphabet=400,
                                special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], show_progress=False)
    folder = tmp_path_factory.mktemp("bert")
    trainer.save_model(str(folder))
    return folder / "vocab.txt"


def test_bert_equals_wordpiece_references(prompts, bert_vocab):
    reference = BertWordPieceTokenizer(str(bert_vocab), lowercase=True, strip_accents=None)
    reference.enable_truncation(CONTEXT)
    reference.enable_padding(length=CONTEXT, pad_id=reference.token_to_id("[PAD]"), pad_token="[PAD]")
    expected = np.asarray([e.ids for e in reference.encode_batch(prompts)])
    unk = reference.token_to_id("[UNK]")
    assert (expected == unk).any(axis=1).sum() > 200  # the vocabulary is small enough to miss some
    assert sum("##" in t for t in reference.get_vocab()) > 500
    ours = tokenizers.bert_tokenizer(bert_vocab)(prompts)
    _assert_same_ids(ours, expected, prompts, "bert_tokenizer vs BertWordPieceTokenizer")
    # LDM's BERTTokenizer: BertTokenizerFast(bert-base-uncased)(truncation=True, max_length=77, padding="max_length").
    hf = transformers.BertTokenizer.from_pretrained(str(bert_vocab.parent), local_files_only=True)
    hf_ids = np.asarray(hf(prompts, truncation=True, max_length=CONTEXT, padding="max_length")["input_ids"])
    _assert_same_ids(ours, hf_ids, prompts, "bert_tokenizer vs transformers.BertTokenizer")
