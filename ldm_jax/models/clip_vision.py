"""The CLIP image tower (a ViT) of OpenAI CLIP and OpenCLIP, for the CLIP score, and CLIP's preprocessing.

A stride-`patch_size` convolution cuts the image into patches, a class token is put first and a learnt
positional embedding added; then `ln_pre`, `layers` residual blocks of self-attention (not causal) and
an MLP, `ln_post` of the class token, times `proj`: open_clip's `encode_image`, transformers'
`get_image_features`. Parameter names are open_clip's `visual.*` keys (also those of OpenAI's own
package); `ldm_jax.convert.clip_weights` reads transformers' layout into them. The blocks are the text
tower's (`open_clip_text.Transformer`); OpenAI's weights use quick_gelu, OpenCLIP's LAION ones GELU.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax.models import layers
from ldm_jax.models.open_clip_text import Transformer, raw_param

Dtype = Any

# open_clip's model configs; heads = width / head_width (64, or 80 for ViT-H-14).
VISION_TOWERS = {
    "ViT-L-14": dict(image_size=224, patch_size=14, width=1024, layers=24, heads=16, embed_dim=768),
    "ViT-H-14": dict(image_size=224, patch_size=14, width=1280, layers=32, heads=16, embed_dim=1024),
}

# CLIP's normalisation of [0, 1] RGB (OpenAI's; OpenCLIP's ViT-H-14 keeps it).
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


class CLIPVisionTransformer(nn.Module):
    """CLIP image encoder: pixels (N, image_size, image_size, 3) from `preprocess` -> (N, embed_dim)."""
    image_size: int = 224
    patch_size: int = 14
    width: int = 1024
    layers: int = 24
    heads: int = 16
    embed_dim: int = 768
    mlp_ratio: float = 4.0
    quick_gelu: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, pixels):
        _check(self)
        if pixels.ndim != 4 or pixels.shape[1:] != (self.image_size, self.image_size, 3):
            raise ValueError(f"pixels must be (batch, {self.image_size}, {self.image_size}, 3), got {pixels.shape}")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        patches = layers.conv(self.width, self.patch_size, stride=self.patch_size, padding="VALID", use_bias=False,
                              name="conv1", **kw)(pixels.astype(self.dtype))
        x = patches.reshape(pixels.shape[0], -1, self.width)
        init = nn.initializers.normal(self.width ** -0.5)
        class_token = raw_param(self, "class_embedding", (self.width,), (layers.EMBED,), init)
        positions = raw_param(self, "positional_embedding", (x.shape[1] + 1, self.width), (None, layers.EMBED), init)
        class_tokens = jnp.broadcast_to(class_token.astype(self.dtype), (x.shape[0], 1, self.width))
        x = jnp.concatenate([class_tokens, x], axis=1) + positions.astype(self.dtype)
        x = layers.layer_norm(name="ln_pre", **kw)(x)
        transformer = Transformer(self.width, self.heads, self.mlp_ratio, self.quick_gelu, causal=False,
                                  name="transformer", **kw)
        pooled = layers.layer_norm(name="ln_post", **kw)(transformer(x, self.layers)[-1][:, 0])
        projection = raw_param(self, "proj", (self.width, self.embed_dim), (layers.EMBED, layers.MLP), init)
        return jnp.einsum("bd,de->be", pooled, projection.astype(pooled.dtype), precision="highest")


def _check(module: CLIPVisionTransformer):
    if module.width % module.heads:
        raise ValueError(f"width {module.width} is not a multiple of heads {module.heads}")
    if module.image_size % module.patch_size:
        raise ValueError(f"image_size {module.image_size} is not a multiple of patch_size {module.patch_size}")


def preprocess(images, image_size: int = 224) -> jax.Array:
    """[-1, 1] NHWC images -> CLIP's input, as OpenAI's `preprocess`: bicubic resize of the short side to
    `image_size` (antialiased, as PIL), centre crop, clamped to [0, 1] (as PIL's 8-bit result) and
    normalised by MEAN / STD. Pure jnp: it runs inside the jitted image embedding."""
    x = (jnp.asarray(images, jnp.float32) + 1.0) / 2.0
    n, h, w, c = x.shape
    # torchvision's Resize(int): the short side to image_size, the long one truncated.
    size = (image_size, int(image_size * w / h)) if h <= w else (int(image_size * h / w), image_size)
    if size != (h, w):
        x = jnp.clip(jax.image.resize(x, (n, *size, c), "bicubic", antialias=True), 0.0, 1.0)
    top, left = (int(round((side - image_size) / 2.0)) for side in size)   # torchvision's CenterCrop
    x = x[:, top:top + image_size, left:left + image_size]
    return (x - np.asarray(MEAN, np.float32)) / np.asarray(STD, np.float32)


def example_inputs(module: CLIPVisionTransformer) -> tuple:
    return (np.zeros((1, module.image_size, module.image_size, 3), np.float32),)
