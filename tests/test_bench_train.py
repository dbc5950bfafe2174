"""Smoke test of experiments/bench_train.py: its shared weights give the same loss and gradients in
ours and in diffusers (no timing).

Skipped without diffusers. About 15 s of CPU, most of it importing diffusers and compiling the
gradient of a two-level UNet.
"""
import importlib.util
import sys

import pytest

from tests.conftest import REPO

pytest.importorskip("torch")
pytest.importorskip("diffusers")


def _bench_module():
    sys.path.insert(0, str(REPO / "experiments"))  # bench_train imports bench_sampling's helpers
    try:
        spec = importlib.util.spec_from_file_location("bench_train", REPO / "experiments" / "bench_train.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(REPO / "experiments"))
    return module


@pytest.mark.slow
def test_same_weights_give_the_same_loss_and_gradients_in_diffusers():
    bench = _bench_module()
    # The SD v1 block structure at two levels: cross-attention down and up blocks, the mid block.
    params = {**bench.shared.unet_params("tiny"), "model_channels": 32, "num_heads": 2, "context_dim": 32,
              "channel_mult": [1, 2], "attention_resolutions": [1, 2], "num_res_blocks": 1}
    result = bench.grad_parity_in_process(params, latent_size=8)
    assert result["loss"] == pytest.approx(result["torch_loss"], rel=1e-5)
    assert result["loss"] > 0.1  # random output layers: the check is not vacuous
    # Every parameter has a gradient on both sides, under the same name; the few that are
    # mathematically zero (biases before one-channel GroupNorm groups) are counted apart.
    assert result["tensors"] == 286 and result["zero_gradient_tensors"] < 20
    assert result["worst_relative_diff"] <= 1e-4, result["worst_tensor"]


def test_parity_verdict():
    bench = _bench_module()
    good = dict(loss_ours=1.0, loss_diffusers=1.0 + 1e-7, worst_relative_diff=1e-5)
    assert bench.parity_passed(good)
    assert not bench.parity_passed({**good, "loss_ours": 1.01})
    assert not bench.parity_passed({**good, "worst_relative_diff": 0.01})
