"""experiments/bench_scale.py at a tiny size: AOT-compiled programs report memory, FLOPs and their floors."""
import sys

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "experiments"))
import bench_scale  # noqa: E402

TINY = "configs/txt2img_f8_bert.py:tiny"


def test_a_train_row_shards_the_state_and_reuses_its_buffers():
    row = bench_scale.train_row(TINY, "data=2xfsdp=4", 1, "f32")
    # fsdp=4 holds a quarter of the state per device, up to what cannot split four ways.
    assert row["state_floor_gb"] <= row["state_gb"] <= 1.1 * row["state_floor_gb"]
    assert row["argument_gb"] >= row["state_gb"]
    assert row["alias_gb"] >= 0.99 * row["state_gb"]       # the donated state is updated in place
    assert row["tflops"] > 0 and row["temp_gb"] > 0 and row["compile_s"] > 0
    assert 0 < row["activations_gb"] < row["temp_gb"] + row["argument_gb"]
    assert "| train | configs/txt2img_f8_bert.py:tiny | data=2xfsdp=4 | 1 | f32 |" in bench_scale.markdown([row])


def test_a_row_from_a_latent_cache_does_not_run_the_first_stage():
    _, _, _, _, batch = bench_scale.train_setup(TINY, "data=8", 1, "f32", latent_cache=True)
    # the tiny model's BERT is trained with the UNet: its tokens stay in the batch, not a cached context
    assert sorted(batch) == ["caption_tokens", "mean", "std"] and batch["mean"].shape[-1] == 4
    row = bench_scale.train_row(TINY, "data=8", 1, "f32", latent_cache=True)
    assert row["program"] == "train from latents" and row["tflops"] > 0 and 0 < row["activations_gb"]


def test_remat_keeps_fewer_activations_for_the_backward_pass():
    kept = {}
    for precision in ("f32", "f32+remat"):
        stage, _, _, state, batch = bench_scale.train_setup(TINY, "data=8", 4, precision)
        kept[precision] = bench_scale.residual_bytes(stage, state, batch)
    assert kept["f32+remat"] < kept["f32"] / 2


@pytest.mark.parametrize("batch, devices", [(2, 2), (3, 1)])
def test_a_sampler_row_splits_its_batch_over_the_devices_that_divide_it(batch, devices):
    row = bench_scale.sample_row(TINY, batch, steps=2)
    assert row["program"] == "ddim2+cfg" and row["mesh"] == f"data={devices}" and row["batch"] == batch // devices
    assert row["state_gb"] == row["state_floor_gb"] > 0          # the UNet is replicated whole
    assert row["tflops"] > 0 and row["output_gb"] > 0


def test_gpu_rows_compile_for_h100s_wherever_jax_has_its_cuda_plugin():
    try:
        devices, platform = bench_scale.accelerator_devices("h100:8")
    except SystemExit as error:  # the CPU-only install: the message says what to install
        assert "CUDA plugin" in str(error)
        pytest.skip("jax's CUDA plugin is not installed")
    assert platform == "cuda" and len(devices) == 8 and "H100" in devices[0].device_kind
    row = bench_scale.train_row(TINY, "fsdp=8", 1, "bf16", devices, platform)
    assert row["state_floor_gb"] <= row["state_gb"] <= 1.1 * row["state_floor_gb"]
    assert row["alias_gb"] >= 0.99 * row["state_gb"] and row["temp_gb"] > 0
