"""Smoke test of experiments/bench_latent_cache.py at a tiny size: both ways train the tiny LDM, the first
step's loss is the same from the cache as from the images, and only the on-the-fly step runs the encoder
(more FLOPs). No timing is asserted."""
import importlib.util
import json

import pytest

from tests.conftest import REPO


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_latent_cache", REPO / "experiments" / "bench_latent_cache.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # two train-step compiles of the tiny LDM
def test_both_ways_train_the_same_objective(tmp_path, capsys):
    bench = _bench_module()
    assert bench.main(["--config", f"{REPO / 'configs' / 'builtin_shapes.py'}:ldm_tiny", "--image-size", "16",
                       "--unet-channels", "0", "--steps", "1", "--warmup", "0", "--rounds", "1",
                       "--json", str(tmp_path / "result.json")]) == 0
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["latent"] == [4, 4, 3] and result["cache_records"] == 8
    assert result["first_loss_relative_diff"] <= 1e-5 and result["images"]["first_loss"] > 0.1
    assert result["images"]["gflops_per_step"] > result["latent_cache"]["gflops_per_step"]
    assert result["latent_cache"]["images_per_s"] > 0
    assert "from the cache:" in capsys.readouterr().out
