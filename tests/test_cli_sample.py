"""`ldm-jax sample` end to end on the fixture checkpoint with a tiny generated CLIP vocabulary."""
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from ldm_jax import cli
from ldm_jax.models import tokenizers
from tests.conftest import tiny_clip_vocab


def test_sample_writes_a_grid_in_float32_and_bfloat16(tmp_path, compvis_fixtures):
    vocab = tiny_clip_vocab(tmp_path / "tok")
    ids = tokenizers.clip_tokenizer(vocab)(["a cat"])
    assert ids[0, 0] == 998 and ids[0, -1] == 999 and 513 in ids[0]      # "cat</w>" is one token
    grids = {}
    for dtype in ("float32", "bfloat16"):
        out = tmp_path / f"grid_{dtype}.png"
        code = cli.main(["sample", "--checkpoint", str(compvis_fixtures / "full_ckpt.safetensors"),
                         "--config", str(compvis_fixtures / "full_ckpt.yaml"), "--prompt", "a cat",
                         "--tokenizer", str(vocab), "--steps", "2", "--batch-size", "2", "--guidance-scale", "3",
                         "--seed", "1", "--dtype", dtype, "--no-progress", "--out", str(out)])
        assert code == 0
        grid = Image.open(out)
        assert grid.size == (128, 64) and grid.mode == "RGB"    # two 64x64 samples side by side
        grids[dtype] = np.asarray(grid).astype(np.float64)
        assert grids[dtype].std() > 0
    difference = np.abs(grids["bfloat16"] - grids["float32"])
    assert 0 < difference.mean() < 4  # bfloat16 really computes, and lands near float32 (of 255 levels)


def test_a_bad_input_ends_in_one_line_naming_it_and_debug_gives_the_traceback(tmp_path, capsys):
    missing = tmp_path / "missing.safetensors"
    argv = ["sample", "--checkpoint", str(missing), "--prompt", "a cat", "--out", str(tmp_path / "grid.png")]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.strip() == f"ldm-jax sample: error: checkpoint {missing} does not exist (--debug for the traceback)"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        cli.main([*argv, "--debug"])


def test_compute_dtypes_each_backend_can_run():
    from ldm_jax.inference.pipeline import check_compute_dtype

    for backend in ("cpu", "gpu", "tpu"):
        check_compute_dtype(None, backend)
        check_compute_dtype(jnp.bfloat16, backend)
    check_compute_dtype(jnp.float16, "gpu")
    with pytest.raises(ValueError, match="TPUs compute in bfloat16, not float16"):
        check_compute_dtype(jnp.float16, "tpu")
    with pytest.raises(ValueError, match="dtype must be one of"):
        check_compute_dtype(jnp.int8, "cpu")
