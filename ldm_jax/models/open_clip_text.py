"""The OpenCLIP text tower of Stable Diffusion 2 (FrozenOpenCLIPEmbedder, ViT-H-14 by default).

Token embedding plus a raw positional embedding, `layers` residual blocks of
(ln_1 -> causal torch-style MultiheadAttention with a fused `in_proj_weight`) and
(ln_2 -> c_fc -> GELU -> c_proj), then `ln_final`. SD 2 uses layer="penultimate": all blocks but the
last, then `ln_final`. Parameter names are the reference's keys under `cond_stage_model.model.`;
`logit_scale` (a CLIP training scalar) has no Flax parameter, and the image tower `visual.*` is not
part of this model (`reference_state_dict` drops it).
"""
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax.models import layers
from ldm_jax.models.attention import attend

Dtype = Any

LAYERS = ("last", "penultimate")

# Text-tower sizes of open_clip's model configs (embed_dim is the joint CLIP embedding width).
TEXT_TOWERS = {
    "ViT-B-32": dict(width=512, layers=12, heads=8, embed_dim=512),
    "ViT-B-16": dict(width=512, layers=12, heads=8, embed_dim=512),
    "ViT-L-14": dict(width=768, layers=12, heads=12, embed_dim=768),
    "ViT-H-14": dict(width=1024, layers=24, heads=16, embed_dim=1024),
    "ViT-bigG-14": dict(width=1280, layers=32, heads=20, embed_dim=1280),
}


def raw_param(module: nn.Module, name: str, shape, axes, init=nn.initializers.normal(0.02)):
    """A parameter stored as the reference stores it (no kernel transpose), with logical axes."""
    return module.param(name, nn.with_logical_partitioning(init, axes), shape, module.param_dtype)


class MultiheadSelfAttention(nn.Module):
    """torch.nn.MultiheadAttention on itself: fused (3*width, width) in-projection, then `out_proj`.
    Causal in the text tower, not in the image tower (`clip_vision`)."""
    width: int
    heads: int
    causal: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        # Stored as the reference stores them: (out, in) rows q, k, v stacked; x @ W^T + b.
        weight = raw_param(self, "in_proj_weight", (3 * self.width, self.width), (layers.MLP, layers.EMBED),
                           nn.initializers.xavier_uniform())
        bias = raw_param(self, "in_proj_bias", (3 * self.width,), (layers.MLP,), nn.initializers.zeros_init())
        x = x.astype(self.dtype)
        qkv = jnp.einsum("bld,ed->ble", x, weight.astype(self.dtype), precision="highest")
        qkv = qkv + bias.astype(self.dtype)
        split = lambda t: t.reshape(*x.shape[:2], self.heads, self.width // self.heads)
        q, k, v = (split(t) for t in jnp.split(qkv, 3, axis=-1))
        out = attend(q, k, v, is_causal=self.causal).reshape(x.shape)
        return layers.dense(self.width, dtype=self.dtype, param_dtype=self.param_dtype, name="out_proj")(out)


class Mlp(nn.Module):
    """Sequential(c_fc, GELU, c_proj); GELU is exact erf, or x*sigmoid(1.702x) with quick_gelu."""
    width: int
    hidden: int
    quick_gelu: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = layers.dense(self.hidden, name="c_fc", **kw)(x)
        h = h * jax.nn.sigmoid(1.702 * h) if self.quick_gelu else layers.gelu(h)
        return layers.dense(self.width, name="c_proj", **kw)(h)


class ResidualAttentionBlock(nn.Module):
    width: int
    heads: int
    mlp_ratio: float = 4.0
    quick_gelu: bool = False
    causal: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        attn = MultiheadSelfAttention(self.width, self.heads, self.causal, name="attn", **kw)
        x = x + attn(layers.layer_norm(name="ln_1", **kw)(x))
        mlp = Mlp(self.width, int(self.width * self.mlp_ratio), self.quick_gelu, name="mlp", **kw)
        return x + mlp(layers.layer_norm(name="ln_2", **kw)(x))


class Transformer(nn.Module):
    """The stack `resblocks:<i>`: returns the input then each block's output, running the first `num_run`."""
    width: int
    heads: int
    mlp_ratio: float = 4.0
    quick_gelu: bool = False
    causal: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, num_run: int):
        hidden_states = [x]
        for i in range(num_run):
            x = ResidualAttentionBlock(self.width, self.heads, self.mlp_ratio, self.quick_gelu, self.causal,
                                       dtype=self.dtype, param_dtype=self.param_dtype,
                                       name=layers.indexed("resblocks", i))(x)
            hidden_states.append(x)
        return hidden_states


class OpenCLIPTextModel(nn.Module):
    """OpenCLIP text encoder: token ids (N, L), L <= context_length -> (N, L, width).

    `layer` "last" runs every block, "penultimate" all but the last (SD 2); `ln_final` follows either.
    `return_pooled=True` also returns open_clip's `encode_text` embedding (N, embed_dim): every block,
    ln_final, the feature at argmax(text) (the EOT token) times `text_projection`.
    """
    width: int = 1024
    layers: int = 24
    heads: int = 16
    context_length: int = 77
    vocab_size: int = 49408
    embed_dim: int = 1024
    mlp_ratio: float = 4.0
    quick_gelu: bool = False
    layer: str = "last"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, text, *, return_pooled: bool = False):
        _check(self)
        if text.ndim != 2 or text.shape[1] > self.context_length:
            raise ValueError(f"text must be (batch, length <= {self.context_length}) token ids, got {text.shape}")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = layers.embed(self.vocab_size, self.width, name="token_embedding", **kw)(text)
        positions = raw_param(self, "positional_embedding", (self.context_length, self.width),
                              (None, layers.EMBED), nn.initializers.normal(0.01))
        x = x + positions[: text.shape[1]].astype(self.dtype)
        transformer = Transformer(self.width, self.heads, self.mlp_ratio, self.quick_gelu, name="transformer", **kw)
        ln_final = layers.layer_norm(name="ln_final", **kw)
        projection = raw_param(self, "text_projection", (self.width, self.embed_dim), (layers.EMBED, layers.MLP),
                               nn.initializers.normal(self.width ** -0.5))
        needed = self.layers - (1 if self.layer == "penultimate" else 0)
        # Blocks past the requested layer are skipped, except at init (which must create them all)
        # and for the pooled embedding, which open_clip takes after every block.
        num_run = self.layers if return_pooled or self.is_initializing() else needed
        hidden_states = transformer(x, num_run)
        features = ln_final(hidden_states[needed])
        if not return_pooled:
            return features
        return features, _pool(ln_final(hidden_states[-1]), text, projection)


def _pool(features, text, projection):
    eot = jnp.take_along_axis(features, jnp.argmax(text, axis=-1)[:, None, None], axis=1)[:, 0]
    return jnp.einsum("bd,de->be", eot, projection.astype(features.dtype), precision="highest")


def _check(module: OpenCLIPTextModel):
    if module.layer not in LAYERS:
        raise ValueError(f"layer must be one of {LAYERS}, got {module.layer!r}")
    if module.width % module.heads:
        raise ValueError(f"width {module.width} is not a multiple of heads {module.heads}")


# Reference params that do not change inference: the pretrained tag (weights come from the
# checkpoint), where it runs, freezing, and max_length (open_clip.tokenize always gives context_length).
_INFERENCE_IRRELEVANT = {"version", "device", "freeze", "max_length"}
_SIZES = ("width", "layers", "heads", "context_length", "vocab_size", "embed_dim", "mlp_ratio", "quick_gelu")


def open_clip_text_from_reference(params: Mapping, **module_kwargs) -> OpenCLIPTextModel:
    """Builds the text tower from FrozenOpenCLIPEmbedder params {arch, layer, version, device, freeze}.

    The sizes come from `arch` (see TEXT_TOWERS); explicit `width`, `layers`, `heads`, `context_length`,
    `vocab_size`, `embed_dim`, `mlp_ratio` or `quick_gelu` entries override them (so an unlisted arch
    works when every size is given).
    """
    params = dict(params)
    unknown = set(params) - {"arch", "layer"} - _INFERENCE_IRRELEVANT - set(_SIZES)
    if unknown:
        raise ValueError(f"unknown FrozenOpenCLIPEmbedder params: {sorted(unknown)}")
    arch = params.get("arch", "ViT-H-14")
    sizes = dict(TEXT_TOWERS.get(arch, {}))
    sizes.update({k: params[k] for k in _SIZES if k in params})
    missing = {"width", "layers", "heads", "embed_dim"} - set(sizes)
    if missing:
        raise ValueError(f"unknown OpenCLIP arch {arch!r} (known: {sorted(TEXT_TOWERS)}); "
                         f"give the sizes {sorted(missing)} explicitly")
    module = OpenCLIPTextModel(**sizes, layer=params.get("layer", "last"), **module_kwargs)
    _check(module)
    return module


def example_inputs(module: OpenCLIPTextModel) -> tuple:
    """One short token sequence ending in the highest id (the EOT of the CLIP vocabulary)."""
    ids = np.zeros((1, min(4, module.context_length)), np.int32)
    ids[0, -1] = module.vocab_size - 1
    return (ids,)
