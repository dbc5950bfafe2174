"""Every task of `LatentDiffusionPipeline.__call__` (`ldm_jax.inference.tasks`) on tiny random models: shapes, mask / strength semantics,
concat channel layouts, determinism under a seed."""
import numpy as np
import pytest

from ldm_jax import zoo
from ldm_jax.inference import tasks
from tests.conftest import random_pipeline

IMAGE = 16          # pixels; f = 2 first stages -> 8x8 latents
STEPS = 2


def _ddconfig(z, double_z):
    return {"double_z": double_z, "z_channels": z, "resolution": IMAGE, "in_channels": 3, "out_ch": 3, "ch": 32,
            "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}


KL = {"kind": "autoencoder_kl", "params": {"embed_dim": 4, "ddconfig": _ddconfig(4, True)}}
VQ = {"kind": "vq", "params": {"embed_dim": 3, "n_embed": 16, "ddconfig": _ddconfig(3, False)}}


def _unet(in_channels, out_channels, context_dim=None):
    params = dict(image_size=8, in_channels=in_channels, out_channels=out_channels, model_channels=32,
                  attention_resolutions=[], num_res_blocks=1, channel_mult=[1, 1], num_heads=2)
    if context_dim:
        params.update(attention_resolutions=[2], use_spatial_transformer=True, context_dim=context_dim)
    return zoo.unet(**params)


def _pipeline(first_stage, unet, cond_stage=None, seed=0, **settings):
    release = zoo.released("tiny.ckpt", "tiny.yaml", "test")
    config = zoo.latent_diffusion(first_stage, unet, release, cond_stage=cond_stage, image_size=8,
                                  scale_factor=0.5, **settings)
    return random_pipeline(config, seed)


@pytest.fixture(scope="module")
def plain():
    return _pipeline(KL, _unet(4, 4))


def _image(seed=0):
    return np.random.default_rng(seed).integers(0, 256, (IMAGE, IMAGE, 3), dtype=np.uint8)


def _mask():
    mask = np.zeros((IMAGE, IMAGE), np.uint8)
    mask[:, IMAGE // 2:] = 255      # right half: generate
    return mask


def _run(pipe, **kwargs):
    kwargs.setdefault("num_steps", STEPS)
    return pipe(progress=False, return_latents=True, **kwargs)


def test_unconditional_shapes_and_determinism(plain):
    images, latents = _run(plain, batch_size=2, seed=3)
    again, latents_again = _run(plain, batch_size=2, seed=3)
    _, other = _run(plain, batch_size=2, seed=4)
    assert latents.shape == (2, 8, 8, 4) and len(images) == 2 and images[0].size == (IMAGE, IMAGE)
    np.testing.assert_array_equal(np.asarray(latents), np.asarray(latents_again))
    np.testing.assert_array_equal(np.asarray(images[1]), np.asarray(again[1]))
    assert not np.allclose(np.asarray(latents), np.asarray(other))


def test_convolutional_sampling_above_trained_size_with_tiled_decoding(plain):
    images, latents = _run(plain, height=2 * IMAGE, width=3 * IMAGE, max_decode_pixels=IMAGE * IMAGE)
    assert latents.shape == (1, 16, 24, 4) and images[0].size == (3 * IMAGE, 2 * IMAGE)
    plain_images = tasks.image_io.array_to_images(np.asarray(plain.decode(latents)))
    # GroupNorm statistics differ per tile, so tiled and plain decoding agree only roughly here.
    difference = np.abs(np.asarray(images[0], np.float32) - np.asarray(plain_images[0], np.float32))
    assert difference.mean() < 40


def test_img2img_strength_zero_returns_the_input_latents(plain):
    image = _image()
    _, latents = _run(plain, image=image, strength=0.0)
    encoded = plain.encode(tasks.image_io.image_to_array(image, IMAGE, IMAGE))
    np.testing.assert_allclose(np.asarray(latents), np.asarray(encoded), atol=1e-5)
    _, changed = _run(plain, image=image, strength=0.5)
    assert not np.allclose(np.asarray(changed), np.asarray(encoded), atol=1e-3)


def test_latent_blending_keeps_the_encoded_input_outside_the_mask(plain):
    image = _image(1)
    _, latents = _run(plain, image=image, mask=_mask(), batch_size=2)
    encoded = np.asarray(plain.encode(tasks.image_io.image_to_array(image, IMAGE, IMAGE)))
    latents = np.asarray(latents)
    np.testing.assert_allclose(latents[:, :, :4], np.repeat(encoded, 2, 0)[:, :, :4], atol=1e-5)
    assert not np.allclose(latents[:, :, 4:], np.repeat(encoded, 2, 0)[:, :, 4:], atol=1e-3)


def test_class_conditional_uses_the_null_class_for_guidance():
    pipe = _pipeline(KL, _unet(4, 4, context_dim=16), zoo.class_embedder(16, n_classes=5),
                     conditioning_key="crossattn")
    inputs = tasks.prepare(pipe, class_label=[1, 2])
    null = pipe.encode_class(np.array([4, 4]))
    np.testing.assert_array_equal(np.asarray(inputs.uncond_context), np.asarray(null))
    images, latents = _run(pipe, class_label=[1, 2], guidance_scale=2.0)
    assert latents.shape == (2, 8, 8, 4) and len(images) == 2
    _, other = _run(pipe, class_label=[3, 3], guidance_scale=2.0)
    assert not np.allclose(np.asarray(latents), np.asarray(other))


def test_text_to_image_with_a_tokenizer_callable():
    pipe = _pipeline(KL, _unet(4, 4, context_dim=32), zoo.bert_embedder(32, 1, vocab_size=50, max_seq_len=8),
                     conditioning_key="crossattn")
    seen = []

    def tokenize(texts):
        seen.extend(texts)
        return np.array([[len(t) % 50] + [0] * 7 for t in texts], np.int32)

    _, latents = _run(pipe, prompt="a cat", tokenizer=tokenize, batch_size=2, guidance_scale=3.0)
    assert latents.shape == (2, 8, 8, 4)
    assert seen == ["a cat", "a cat", "", ""]   # cond, then the unconditional ""


def test_ldm_inpainting_concat_is_encoded_masked_image_then_mask():
    pipe = _pipeline(VQ, _unet(7, 3), conditioning_key="concat", cond_stage_source="first_stage",
                     scale_by_std=False)
    inputs = tasks.prepare(pipe, image=_image(), mask=_mask())
    concat = np.asarray(inputs.concat)
    assert concat.shape == (1, 8, 8, 7 - 3)
    assert set(np.unique(concat[..., 3])) == {-1.0, 1.0}          # the mask, mapped to {-1, 1}
    assert (concat[0, :, 4:, 3] == 1).all() and (concat[0, :, :4, 3] == -1).all()
    images, latents = _run(pipe, image=_image(), mask=_mask())
    assert latents.shape == (1, 8, 8, 3)
    # The reference script pastes the known pixels back.
    kept = np.asarray(images[0])[:, : IMAGE // 2].astype(int) - _image()[:, : IMAGE // 2].astype(int)
    assert np.abs(kept).max() <= 1


def test_sd_inpainting_concat_is_mask_then_scaled_masked_image_latents():
    pipe = _pipeline(KL, _unet(9, 4, context_dim=32), zoo.bert_embedder(32, 1, vocab_size=50, max_seq_len=8),
                     conditioning_key="hybrid")
    tokenize = lambda texts: np.ones((len(texts), 8), np.int32)
    inputs = tasks.prepare(pipe, image=_image(), mask=_mask(), prompt="x", tokenizer=tokenize)
    concat = np.asarray(inputs.concat)
    assert concat.shape == (1, 8, 8, 5)
    np.testing.assert_array_equal(concat[0, :, :, 0], np.repeat([[0.0] * 4 + [1.0] * 4], 8, 0))
    masked = tasks.image_io.image_to_array(_image(), IMAGE, IMAGE) * (tasks.image_io.mask_to_array(
        _mask(), IMAGE, IMAGE) < 0.5)
    np.testing.assert_allclose(concat[..., 1:], np.asarray(pipe.encode(masked)), atol=1e-5)
    _, latents = _run(pipe, image=_image(), mask=_mask(), prompt="x", tokenizer=tokenize)
    assert latents.shape == (1, 8, 8, 4)


def test_super_resolution_concatenates_the_low_res_image():
    pipe = _pipeline(VQ, _unet(6, 3), conditioning_key="concat", cond_stage_source="identity")
    low_res = _image()[:8, :8]
    inputs = tasks.prepare(pipe, low_res=low_res)
    np.testing.assert_allclose(np.asarray(inputs.concat)[0], low_res / 127.5 - 1.0, atol=1e-6)
    images, latents = _run(pipe, image=low_res, eta=1.0)     # image= serves as low_res for SR models
    assert latents.shape == (1, 8, 8, 3) and images[0].size == (IMAGE, IMAGE)


def test_semantic_synthesis_from_a_label_map():
    pipe = _pipeline(VQ, _unet(6, 3), zoo.spatial_rescaler(n_stages=1, in_channels=5, out_channels=3),
                     conditioning_key="concat")
    labels = np.random.default_rng(0).integers(0, 5, (2 * IMAGE, 2 * IMAGE))
    inputs = tasks.prepare(pipe, segmentation=labels)
    assert np.asarray(inputs.concat).shape == (1, 16, 16, 3)      # sized by the map: 32^2 -> 16^2 latents
    _, latents = _run(pipe, segmentation=labels, batch_size=2)
    assert latents.shape == (2, 16, 16, 3)


def test_layout_to_image_from_boxes():
    pipe = _pipeline(VQ, _unet(3, 3, context_dim=32),
                     zoo.bert_embedder(32, 1, vocab_size=128, max_seq_len=8, use_tokenizer=False),
                     conditioning_key="crossattn")
    boxes = [{"category": 3, "bbox": [0.1, 0.2, 0.5, 0.5]}]
    inputs = tasks.prepare(pipe, layout=boxes)
    assert np.asarray(inputs.context).shape == (1, 8, 32) and not inputs.guided   # unguided, as the reference
    _, latents = _run(pipe, layout=boxes)
    _, moved = _run(pipe, layout=[{"category": 3, "bbox": [0.5, 0.5, 0.5, 0.5]}])
    assert latents.shape == (1, 8, 8, 3)
    assert not np.allclose(np.asarray(latents), np.asarray(moved))


def test_concat_models_reject_missing_inputs():
    pipe = _pipeline(VQ, _unet(7, 3), conditioning_key="concat", cond_stage_source="first_stage")
    with pytest.raises(ValueError, match="image= and mask="):
        tasks.prepare(pipe)
