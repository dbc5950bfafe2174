"""LatentDiffusionPipeline against the reference sampler runs (fixtures sample.npz, README section 9)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldm_jax.diffusion import sampling
from ldm_jax import LatentDiffusionPipeline
from tests.conftest import assert_matches_reference, random_pipeline


def nhwc(a):
    return np.moveaxis(np.asarray(a), -3, -1)  # (..., C, H, W) -> (..., H, W, C)


@pytest.fixture(scope="module")
def sample_npz(compvis_fixtures):
    return dict(np.load(compvis_fixtures / "sample.npz"))


@pytest.fixture(scope="module")
def pipe(compvis_fixtures):
    return LatentDiffusionPipeline.from_checkpoint(compvis_fixtures / "full_ckpt.safetensors",
                                                   compvis_fixtures / "full_ckpt.yaml")


@pytest.fixture(scope="module")
def recording_pipe(compvis_fixtures):
    """A pipeline whose UNet calls report their timesteps (host callbacks: never persistently cached)."""
    pipe = LatentDiffusionPipeline.from_checkpoint(compvis_fixtures / "full_ckpt.safetensors",
                                                   compvis_fixtures / "full_ckpt.yaml")
    calls = []
    model_fn = pipe.sampler.model_fn

    def recording_model_fn(params, x, t, cond):
        jax.debug.callback(lambda tt: calls.append(np.asarray(tt)), t)
        return model_fn(params, x, t, cond)

    pipe.sampler.model_fn = recording_model_fn
    pipe.recorded_calls = calls
    return pipe


def run(pipe, **kwargs):
    calls = getattr(pipe, "recorded_calls", [])
    calls.clear()
    out = pipe.sample_latents(return_intermediates=True, progress=False, **kwargs)
    jax.effects_barrier()
    return out, np.stack(calls) if calls else None


def assert_trajectory(actual, reference, name):
    """Trajectories grow along the run: max|a - b| <= 1e-4 max|ref| per array."""
    actual, reference = np.asarray(actual), np.asarray(reference)
    assert actual.shape == reference.shape, name
    error = np.abs(actual.astype(np.float64) - reference).max()
    assert error <= 1e-4 * np.abs(reference).max(), f"{name}: {error:.3g} > 1e-4 * {np.abs(reference).max():.3g}"


def check_run(pipe, sample_npz, prefix, latents, intermediates, calls, with_pred_x0=True):
    assert_trajectory(latents, nhwc(sample_npz[f"{prefix}_samples"]), f"{prefix}_samples")
    assert_trajectory(intermediates["x_inter"], nhwc(sample_npz[f"{prefix}_x_inter"]), f"{prefix}_x_inter")
    if with_pred_x0:
        assert_trajectory(intermediates["pred_x0"], nhwc(sample_npz[f"{prefix}_pred_x0"]), f"{prefix}_pred_x0")
    decoded = pipe.decode(latents)
    np.testing.assert_allclose(decoded, nhwc(sample_npz[f"{prefix}_decoded"]), atol=1e-3, rtol=0)


def test_ddim_eta0(recording_pipe, sample_npz):
    pipe = recording_pipe
    (latents, inter), calls = run(pipe, x_T=nhwc(sample_npz["x_T"]), context=sample_npz["cond"],
                                  uncond_context=sample_npz["uncond"], sampler="ddim", steps=10, eta=0.0,
                                  guidance_scale=3.0)
    check_run(pipe, sample_npz, "ddim", latents, inter, calls)
    np.testing.assert_array_equal(calls, sample_npz["ddim_model_call_timesteps"])
    grid_timesteps = np.sort(np.unique(calls))
    np.testing.assert_array_equal(grid_timesteps, sample_npz["ddim_timesteps"])


def test_plms(recording_pipe, sample_npz):
    pipe = recording_pipe
    (latents, inter), calls = run(pipe, x_T=nhwc(sample_npz["x_T"]), context=sample_npz["cond"],
                                  uncond_context=sample_npz["uncond"], sampler="plms", steps=10, guidance_scale=3.0)
    check_run(pipe, sample_npz, "plms", latents, inter, calls)
    np.testing.assert_array_equal(calls, sample_npz["plms_model_call_timesteps"])  # 11 calls: two in step 1


def test_ddim_eta1_replayed_from_recorded_noise(pipe, sample_npz):
    (latents, inter), calls = run(pipe, x_T=nhwc(sample_npz["x_T"]), context=sample_npz["cond"],
                                  uncond_context=sample_npz["uncond"], sampler="ddim", steps=10, eta=1.0,
                                  guidance_scale=3.0, noise=nhwc(sample_npz["ddim_eta1_noises"]))
    check_run(pipe, sample_npz, "ddim_eta1", latents, inter, calls, with_pred_x0=False)
    grid = sampling.sampling_grid(pipe.ldm.schedule, "ddim", 10)
    np.testing.assert_array_equal(np.asarray(grid.timesteps)[::-1], sample_npz["ddim_eta1_timesteps"])
    np.testing.assert_allclose(np.asarray(grid.sigma_unit)[::-1], sample_npz["ddim_eta1_sigmas"], rtol=1e-6)


def test_end_to_end_tokens_clip_ddim_decode(pipe, sample_npz):
    cond = pipe.encode_text(sample_npz["e2e_cond_ids"])
    uncond = pipe.encode_text(sample_npz["e2e_uncond_ids"])
    assert_matches_reference(cond, sample_npz["e2e_cond"], "e2e_cond")
    assert_matches_reference(uncond, sample_npz["e2e_uncond"], "e2e_uncond")
    latents = pipe.sample_latents(nhwc(sample_npz["x_T"]), context=cond, uncond_context=uncond, sampler="ddim",
                                  steps=10, eta=0.0, guidance_scale=3.0, progress=False)
    assert_trajectory(latents, nhwc(sample_npz["e2e_samples"]), "e2e_samples")
    np.testing.assert_allclose(pipe.decode(latents), nhwc(sample_npz["e2e_decoded"]), atol=1e-3, rtol=0)


def test_knobs_do_not_recompile(pipe, sample_npz):
    kwargs = dict(x_T=nhwc(sample_npz["x_T"]), context=sample_npz["cond"], uncond_context=sample_npz["uncond"],
                  sampler="ddim", steps=10, progress=False)
    before = pipe.sampler.trace_count
    outputs = [np.asarray(pipe.sample_latents(guidance_scale=g, eta=e, rng=jax.random.PRNGKey(s), **kwargs))
               for g, e, s in [(1.0, 0.0, 0), (3.0, 1.0, 1), (7.5, 0.5, 2)]]
    after_first = pipe.sampler.trace_count
    assert after_first - before <= 1  # at most the first call of this signature traces
    assert np.abs(outputs[0] - outputs[1]).max() > 1e-3 and np.abs(outputs[1] - outputs[2]).max() > 1e-3
    init = jnp.zeros_like(kwargs["x_T"])
    for strength in (0.0, 0.3, 1.0):
        pipe.sample_latents(init_latents=init, strength=strength, **kwargs)
    assert pipe.sampler.trace_count - after_first <= 1


def test_encode_decode_shapes(pipe, sample_npz):
    images = pipe.decode(nhwc(sample_npz["x_T"]))
    assert images.shape == (2, 64, 64, 3)
    latents = pipe.encode(jnp.clip(images, -1, 1))
    assert latents.shape == (2, 8, 8, 4)
    # encode is the posterior mode times scale_factor: deterministic.
    np.testing.assert_array_equal(latents, pipe.encode(jnp.clip(images, -1, 1)))


# -- other settings on tiny random weights --------------------------------------------------------

def _tiny_pipeline(first_stage_kind: str, parameterization: str):
    """A VQ or KL first stage, a class-embedder cond stage and a hybrid (concat + cross-attention) UNet."""
    from ldm_jax import zoo
    ddconfig = {"double_z": first_stage_kind == "autoencoder_kl", "z_channels": 3, "resolution": 16,
                "in_channels": 3, "out_ch": 3, "ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1,
                "attn_resolutions": [], "dropout": 0.0}
    first = {"kind": first_stage_kind, "params": {"embed_dim": 3, "ddconfig": ddconfig,
                                                  **({"n_embed": 16} if first_stage_kind == "vq" else {})}}
    unet = zoo.unet(image_size=8, in_channels=6, out_channels=3, model_channels=32, attention_resolutions=[2],
                    num_res_blocks=1, channel_mult=[1, 2], num_head_channels=16, use_spatial_transformer=True,
                    transformer_depth=1, context_dim=32, legacy=False)
    config = zoo.latent_diffusion(first, unet, zoo.released("none", "none", "test"),
                                  cond_stage=zoo.class_embedder(embed_dim=32, n_classes=11),
                                  conditioning_key="hybrid", parameterization=parameterization, scale_factor=0.5,
                                  image_size=8, channels=3, linear_start=0.00085, linear_end=0.012)
    return random_pipeline(config)


@pytest.mark.parametrize("first_stage_kind, parameterization", [("vq", "eps"), ("autoencoder_kl", "v")])
def test_tiny_class_conditional_concat_pipeline(first_stage_kind, parameterization):
    pipe = _tiny_pipeline(first_stage_kind, parameterization)
    images = jax.random.uniform(jax.random.PRNGKey(5), (2, 16, 16, 3), minval=-1, maxval=1)
    concat = pipe.encode(images)
    assert concat.shape == (2, 8, 8, 3)
    x_T = jax.random.normal(jax.random.PRNGKey(6), (2, 8, 8, 3))
    kwargs = dict(class_labels=jnp.array([3, 9]), concat=concat, sampler="dpm_solver++", steps=4,
                  progress=False)
    a = pipe.sample_latents(x_T, guidance_scale=3.0, **kwargs)
    b = pipe.sample_latents(x_T, guidance_scale=3.0, **kwargs)
    c = pipe.sample_latents(x_T, guidance_scale=1.0, **kwargs)
    assert a.shape == x_T.shape and np.all(np.isfinite(np.asarray(a)))
    np.testing.assert_array_equal(a, b)                 # deterministic
    assert np.abs(np.asarray(a) - np.asarray(c)).max() > 1e-4   # the null-class branch is used
    assert pipe.sampler.trace_count == 1
    assert pipe.decode(a).shape == (2, 16, 16, 3)
