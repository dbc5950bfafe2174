"""Smoke test of experiments/bench_sampling.py: its weight conversion check (no timing).

Skipped without diffusers. About 10 s of CPU, most of it importing diffusers and compiling a
two-level UNet.
"""
import importlib.util

import pytest

from tests.conftest import REPO

pytest.importorskip("torch")
pytest.importorskip("diffusers")


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_sampling", REPO / "experiments" / "bench_sampling.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_same_weights_give_the_same_eps_in_diffusers():
    bench = _bench_module()
    # The SD v1 block structure at two levels: cross-attention down and up blocks, the mid block.
    params = {**bench.unet_params("tiny"), "model_channels": 32, "num_heads": 2, "context_dim": 32,
              "channel_mult": [1, 2], "attention_resolutions": [1, 2], "num_res_blocks": 1}
    max_diff, max_ref = bench.eps_parity_in_process(params, latent_size=8)
    assert max_ref > 0.1  # random output layers: the check is not vacuous
    assert max_diff <= 1e-4 * max(1.0, max_ref)
