"""`ldm-jax sample` end to end on the fixture checkpoint with a tiny generated CLIP vocabulary."""
import json

import numpy as np
from PIL import Image

from ldm_jax import cli
from ldm_jax.models import tokenizers


def _tiny_clip_vocab(folder):
    """A byte-level BPE vocabulary of 1000 tokens like the fixture CLIP: BOS 998, EOS 999."""
    alphabet = tokenizers._byte_level_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["ca", "cat</w>"]
    tokens += [f"unused{i}" for i in range(998 - len(tokens))] + [tokenizers.CLIP_BOS, tokenizers.CLIP_EOS]
    folder.mkdir()
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\nc a\nca t</w>\n")
    return folder


def test_sample_writes_a_grid(tmp_path, compvis_fixtures):
    vocab = _tiny_clip_vocab(tmp_path / "tok")
    ids = tokenizers.clip_tokenizer(vocab)(["a cat"])
    assert ids[0, 0] == 998 and ids[0, -1] == 999 and 513 in ids[0]      # "cat</w>" is one token
    out = tmp_path / "grid.png"
    code = cli.main(["sample", "--checkpoint", str(compvis_fixtures / "full_ckpt.safetensors"),
                     "--config", str(compvis_fixtures / "full_ckpt.yaml"), "--prompt", "a cat",
                     "--tokenizer", str(vocab), "--steps", "2", "--batch-size", "2", "--guidance-scale", "3",
                     "--seed", "1", "--no-progress", "--out", str(out)])
    assert code == 0
    grid = Image.open(out)
    assert grid.size == (128, 64) and grid.mode == "RGB"    # two 64x64 samples side by side
    pixels = np.asarray(grid)
    assert pixels.std() > 0
