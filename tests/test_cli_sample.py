"""`ldm-jax sample` end to end on the fixture checkpoint with a tiny generated CLIP vocabulary."""
import numpy as np
import pytest
from PIL import Image

from ldm_jax import cli
from ldm_jax.models import tokenizers
from tests.conftest import tiny_clip_vocab


def test_sample_writes_a_grid(tmp_path, compvis_fixtures):
    vocab = tiny_clip_vocab(tmp_path / "tok")
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


def test_a_bad_input_ends_in_one_line_naming_it_and_debug_gives_the_traceback(tmp_path, capsys):
    missing = tmp_path / "missing.safetensors"
    argv = ["sample", "--checkpoint", str(missing), "--prompt", "a cat", "--out", str(tmp_path / "grid.png")]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.strip() == f"ldm-jax sample: error: checkpoint {missing} does not exist (--debug for the traceback)"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        cli.main([*argv, "--debug"])
