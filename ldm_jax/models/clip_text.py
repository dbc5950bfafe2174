"""The CLIP text transformer of Stable Diffusion v1 (Hugging Face `CLIPTextModel`, in FrozenCLIPEmbedder).

Token + position embeddings, `num_hidden_layers` pre-norm blocks of causal self-attention and an MLP
(quick_gelu for OpenAI CLIP), then `final_layer_norm`. The Flax tree is the `text_model` level of
transformers 4 (`embeddings`, `encoder.layers:<i>`, `final_layer_norm`), so its reference keys are
those of transformers 5. `ldm_jax.convert.compvis` strips the SD v1 prefix
`cond_stage_model.transformer.` and the transformers 4 level `text_model.` from a checkpoint's keys.
"""
import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax.models import layers
from ldm_jax.models.attention import attend

Dtype = Any


LAYERS = ("last", "penultimate", "hidden", "pooled")


def quick_gelu(x):
    return x * jax.nn.sigmoid(1.702 * x)


_ACTIVATIONS = {"quick_gelu": quick_gelu, "gelu": layers.gelu}


class CLIPAttention(nn.Module):
    """Causal multi-head self-attention with separate biased q/k/v/out projections."""
    hidden_size: int
    num_attention_heads: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        head_dim = self.hidden_size // self.num_attention_heads
        split = lambda t: t.reshape(*x.shape[:2], self.num_attention_heads, head_dim)
        q, k, v = (split(layers.dense(self.hidden_size, name=f"{n}_proj", **kw)(x)) for n in "qkv")
        out = attend(q, k, v, is_causal=True)
        return layers.dense(self.hidden_size, name="out_proj", **kw)(out.reshape(x.shape))


class CLIPMLP(nn.Module):
    hidden_size: int
    intermediate_size: int
    hidden_act: str = "quick_gelu"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = _ACTIVATIONS[self.hidden_act](layers.dense(self.intermediate_size, name="fc1", **kw)(x))
        return layers.dense(self.hidden_size, name="fc2", **kw)(h)


class CLIPEncoderLayer(nn.Module):
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        norm = lambda name: layers.layer_norm(self.layer_norm_eps, name=name, **kw)
        x = x + CLIPAttention(self.hidden_size, self.num_attention_heads, name="self_attn", **kw)(
            norm("layer_norm1")(x))
        mlp = CLIPMLP(self.hidden_size, self.intermediate_size, self.hidden_act, name="mlp", **kw)
        return x + mlp(norm("layer_norm2")(x))


class CLIPEmbeddings(nn.Module):
    hidden_size: int
    vocab_size: int
    max_position_embeddings: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, input_ids):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        tokens = layers.embed(self.vocab_size, self.hidden_size, name="token_embedding", **kw)(input_ids)
        positions = layers.embed(self.max_position_embeddings, self.hidden_size, name="position_embedding",
                                 **kw)(jnp.arange(input_ids.shape[1]))
        return tokens + positions[None]


class CLIPEncoder(nn.Module):
    """The stack `layers:<i>`: returns the input then each layer's output, running the first `num_run`."""
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, num_run: int):
        hidden_states = [x]
        for i in range(num_run):
            x = CLIPEncoderLayer(self.hidden_size, self.intermediate_size, self.num_attention_heads,
                                 self.hidden_act, self.layer_norm_eps, dtype=self.dtype,
                                 param_dtype=self.param_dtype, name=layers.indexed("layers", i))(x)
            hidden_states.append(x)
        return hidden_states


class CLIPTextModel(nn.Module):
    """CLIP text encoder: input_ids (N, L), L <= max_position_embeddings -> features.

    `layer` picks the output: "last" the final_layer_norm of the last layer (SD v1's context),
    "penultimate" final_layer_norm applied to the second-to-last layer's output (clip skip 2, the
    same meaning as OpenCLIP's "penultimate"), "hidden" the raw `hidden_states[layer_idx]` (no final
    norm, as the reference FrozenCLIPEmbedder's layer="hidden"), "pooled" the pooled output as (N, 1, D).
    With `return_all=True` the call returns a dict of `last_hidden_state`, `pooler_output` (the
    final-norm feature at argmax(input_ids), the first EOS) and `hidden_states` (embeddings then each
    layer's output, a tuple of num_hidden_layers + 1 arrays), as transformers does.
    """
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    max_position_embeddings: int = 77
    vocab_size: int = 49408
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    layer: str = "last"
    layer_idx: int | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def _num_layers_needed(self) -> int:
        if self.layer == "penultimate":
            return self.num_hidden_layers - 1
        if self.layer == "hidden":
            return self.layer_idx % (self.num_hidden_layers + 1)
        return self.num_hidden_layers

    @nn.compact
    def __call__(self, input_ids, *, return_all: bool = False):
        _check_choices(self)
        if input_ids.ndim != 2 or input_ids.shape[1] > self.max_position_embeddings:
            raise ValueError(f"input_ids must be (batch, length <= {self.max_position_embeddings}), "
                             f"got shape {input_ids.shape}")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = CLIPEmbeddings(self.hidden_size, self.vocab_size, self.max_position_embeddings, name="embeddings",
                           **kw)(input_ids)
        # Layers past the one asked for are skipped, except at init, which must create every parameter.
        needed = self._num_layers_needed()
        num_run = self.num_hidden_layers if return_all or self.is_initializing() else needed
        encoder = CLIPEncoder(self.hidden_size, self.intermediate_size, self.num_attention_heads, self.hidden_act,
                              self.layer_norm_eps, name="encoder", **kw)
        hidden_states = encoder(x, num_run)
        final_norm = layers.layer_norm(self.layer_norm_eps, name="final_layer_norm", **kw)
        if return_all:
            last = final_norm(hidden_states[-1])
            return {"last_hidden_state": last, "pooler_output": pooled(last, input_ids),
                    "hidden_states": tuple(hidden_states)}
        if self.layer == "hidden":
            if self.is_initializing():
                final_norm(x)  # creates final_layer_norm's parameters, which checkpoints hold
            return hidden_states[needed]
        out = final_norm(hidden_states[needed])
        return pooled(out, input_ids)[:, None] if self.layer == "pooled" else out


def pooled(last_hidden_state, input_ids):
    """The feature at argmax(input_ids): the first EOS token, the highest id of the CLIP vocabulary."""
    index = jnp.argmax(input_ids, axis=-1)
    return jnp.take_along_axis(last_hidden_state, index[:, None, None], axis=1)[:, 0]


def _check_choices(module: CLIPTextModel):
    if module.layer not in LAYERS:
        raise ValueError(f"layer must be one of {LAYERS}, got {module.layer!r}")
    if module.layer == "hidden" and (module.layer_idx is None
                                      or not -module.num_hidden_layers - 1 <= module.layer_idx
                                      <= module.num_hidden_layers):
        raise ValueError(f"layer='hidden' needs layer_idx in [-{module.num_hidden_layers + 1}, "
                         f"{module.num_hidden_layers}], got {module.layer_idx}")
    if module.hidden_act not in _ACTIVATIONS:
        raise ValueError(f"hidden_act must be one of {sorted(_ACTIVATIONS)}, got {module.hidden_act!r}")
    if module.hidden_size % module.num_attention_heads:
        raise ValueError(f"hidden_size {module.hidden_size} is not a multiple of num_attention_heads "
                         f"{module.num_attention_heads}")


# The SD v1 text encoder, openai/clip-vit-large-patch14's text tower (123,060,480 parameters).
SD_V1_TEXT_CONFIG = {
    "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
    "max_position_embeddings": 77, "vocab_size": 49408, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
    "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 1, "model_type": "clip_text_model",
}

_ARCHITECTURE_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                      "max_position_embeddings", "vocab_size", "hidden_act", "layer_norm_eps")
# CLIPTextConfig / PretrainedConfig keys that do not change the text model's inference: token ids,
# dropout (0 in eval), init scales, the projection of CLIPTextModelWithProjection, generation
# defaults and bookkeeping written by different transformers versions.
_NON_ARCHITECTURE_KEYS = frozenset("""
    _name_or_path _commit_hash _attn_implementation _attn_implementation_autoset add_cross_attention
    architectures attention_dropout bad_words_ids begin_suppress_tokens bos_token_id chunk_size_feed_forward
    cross_attention_hidden_size decoder_start_token_id diversity_penalty do_sample dropout dtype
    early_stopping encoder_no_repeat_ngram_size eos_token_id exponential_decay_length_penalty finetuning_task
    forced_bos_token_id forced_eos_token_id gradient_checkpointing id2label initializer_factor
    initializer_range is_decoder is_encoder_decoder label2id length_penalty max_length min_length model_type
    no_repeat_ngram_size num_beam_groups num_beams num_return_sequences output_attentions
    output_hidden_states output_scores pad_token_id prefix problem_type projection_dim pruned_heads
    remove_invalid_values repetition_penalty return_dict return_dict_in_generate sep_token_id
    suppress_tokens task_specific_params temperature tf_legacy_loss tie_encoder_decoder tie_word_embeddings
    tokenizer_class top_k top_p torch_dtype torchscript transformers_version typical_p use_bfloat16
    use_cache
""".split())


def clip_text_from_reference(config: Mapping, *, layer: str = "last", layer_idx: int | None = None,
                             **module_kwargs) -> CLIPTextModel:
    """Builds the text model from a transformers CLIPTextConfig dict (or a CLIPConfig with `text_config`).

    Generation / bookkeeping keys are ignored; any other unknown key raises a ValueError, since it may
    change the architecture. `layer` / `layer_idx` are FrozenCLIPEmbedder's params.
    """
    config = dict(config.get("text_config", config))
    if config.get("model_type", "clip_text_model") != "clip_text_model":
        raise ValueError(f"expected a CLIPTextConfig (model_type 'clip_text_model'), "
                         f"got model_type {config['model_type']!r}")
    unknown = set(config) - set(_ARCHITECTURE_KEYS) - _NON_ARCHITECTURE_KEYS
    if unknown:
        raise ValueError(f"unknown CLIPTextConfig keys that may change the architecture: {sorted(unknown)}")
    defaults = {f.name: f.default for f in dataclasses.fields(CLIPTextModel)}
    kwargs = {k: config.get(k, defaults[k]) for k in _ARCHITECTURE_KEYS}
    module = CLIPTextModel(**kwargs, layer=layer, layer_idx=layer_idx, **module_kwargs)
    _check_choices(module)
    return module


SD_V1_VERSION = "openai/clip-vit-large-patch14"


def frozen_clip_embedder_from_reference(params: Mapping, text_config: Mapping | None = None,
                                        **module_kwargs) -> CLIPTextModel:
    """Builds the text model from a FrozenCLIPEmbedder `cond_stage_config.params` mapping.

    Those params name a hub `version` but not the sizes: `text_config` (a CLIPTextConfig dict) gives them,
    by default SD_V1_TEXT_CONFIG, which only fits version openai/clip-vit-large-patch14.
    """
    params = dict(params)
    unknown = set(params) - {"version", "device", "max_length", "freeze", "layer", "layer_idx"}
    if unknown:
        raise ValueError(f"unknown FrozenCLIPEmbedder params: {sorted(unknown)}")
    version = params.get("version", SD_V1_VERSION)
    if text_config is None:
        if version != SD_V1_VERSION:
            raise ValueError(f"FrozenCLIPEmbedder version {version!r} is not {SD_V1_VERSION!r}: "
                             f"pass its CLIPTextConfig dict as text_config")
        text_config = SD_V1_TEXT_CONFIG
    module = clip_text_from_reference(text_config, layer=params.get("layer", "last"),
                                      layer_idx=params.get("layer_idx"), **module_kwargs)
    if params.get("max_length", 77) > module.max_position_embeddings:
        raise ValueError(f"max_length {params['max_length']} exceeds max_position_embeddings "
                         f"{module.max_position_embeddings}")
    return module


def example_inputs(module: CLIPTextModel) -> tuple:
    """One short token sequence ending in the highest id (the EOS of real CLIP vocabularies)."""
    length = min(4, module.max_position_embeddings)
    ids = np.zeros((1, length), np.int32)
    ids[0, -1] = module.vocab_size - 1
    return (ids,)
