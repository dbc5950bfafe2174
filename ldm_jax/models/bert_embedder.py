"""The BERT-like text encoder of the LDM text-to-image models (`TransformerEmbedder` / `BERTEmbedder`).

The reference wraps a vendored x-transformers `TransformerWrapper(attn_layers=Encoder(...))`: a learned
token embedding plus a learned absolute position embedding, `n_layer` pre-norm blocks of
(LayerNorm -> multi-head self-attention, residual) then (LayerNorm -> GELU MLP, residual), and a final
LayerNorm. The embedder returns that final LayerNorm's output; the `to_logits` head is unused.

Parameter names mirror the reference: `transformer.attn_layers.layers.<i>.<j>` where layer `i`
alternates attention (even) and feed-forward (odd) and `j` is 0 for the norm, 1 for the block
(2, the residual, has no parameters).
"""
from typing import Any, Mapping

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from ldm_jax.models import layers
from ldm_jax.models.attention import attend

Dtype = Any

# x-transformers defaults, which the LDM embedders never override.
DEFAULT_HEADS = 8
DEFAULT_DIM_HEAD = 64


class Attention(nn.Module):
    """x-transformers self-attention: bias-free q/k/v projections, `heads` x `dim_head`, biased output."""
    dim: int
    heads: int = DEFAULT_HEADS
    dim_head: int = DEFAULT_DIM_HEAD
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        inner = self.heads * self.dim_head
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        q, k, v = (layers.dense(inner, use_bias=False, name=f"to_{n}", **kw)(x) for n in "qkv")
        split = lambda t: t.reshape(*t.shape[:2], self.heads, self.dim_head)
        out = attend(split(q), split(k), split(v))
        return layers.dense(self.dim, name="to_out", **kw)(out.reshape(*x.shape[:2], inner))


class FeedForward(nn.Module):
    """x-transformers FeedForward: Linear(dim, mult*dim) -> GELU (exact) -> Linear(mult*dim, dim)."""
    dim: int
    mult: int = 4
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        # Reference: net = Sequential(Sequential(Linear, GELU), Dropout, Linear).
        h = layers.dense(self.dim * self.mult, name=layers.indexed("net", 0, 0), **kw)(x)
        h = layers.gelu(h)
        return layers.dense(self.dim, name=layers.indexed("net", 2), **kw)(h)


class AttentionLayers(nn.Module):
    """x-transformers `Encoder(dim, depth)`: `depth` pre-norm (attention, feed-forward) pairs."""
    dim: int
    depth: int
    heads: int = DEFAULT_HEADS
    dim_head: int = DEFAULT_DIM_HEAD
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        for i in range(2 * self.depth):
            norm = layers.layer_norm(name=layers.indexed("layers", i, 0), **kw)
            if i % 2 == 0:
                block = Attention(self.dim, self.heads, self.dim_head, name=layers.indexed("layers", i, 1), **kw)
            else:
                block = FeedForward(self.dim, name=layers.indexed("layers", i, 1), **kw)
            x = x + block(norm(x))
        return x


class AbsolutePositionalEmbedding(nn.Module):
    """A learned embedding of the positions 0..L-1 (reference attribute `emb`)."""
    dim: int
    max_seq_len: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, length: int):
        table = layers.embed(self.max_seq_len, self.dim, dtype=self.dtype, param_dtype=self.param_dtype,
                             name="emb")
        return table(jnp.arange(length))[None]


class TransformerWrapper(nn.Module):
    """x-transformers TransformerWrapper with `return_embeddings=True`: tokens -> final-norm features."""
    num_tokens: int
    max_seq_len: int
    dim: int
    depth: int
    heads: int = DEFAULT_HEADS
    dim_head: int = DEFAULT_DIM_HEAD
    emb_dropout: float = 0.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, tokens, *, deterministic: bool = True):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = layers.embed(self.num_tokens, self.dim, name="token_emb", **kw)(tokens)
        x = x + AbsolutePositionalEmbedding(self.dim, self.max_seq_len, name="pos_emb", **kw)(tokens.shape[1])
        x = nn.Dropout(self.emb_dropout)(x, deterministic=deterministic)
        x = AttentionLayers(self.dim, self.depth, self.heads, self.dim_head, name="attn_layers", **kw)(x)
        return layers.layer_norm(name="norm", **kw)(x)


class TransformerEmbedder(nn.Module):
    """LDM `TransformerEmbedder` / `BERTEmbedder`: token ids (N, L), L <= max_seq_len -> (N, L, n_embed).

    Text goes through `ldm_jax.models.tokenizers.bert_tokenizer` first (BERTEmbedder's
    `use_tokenizer=True` path). `embedding_dropout` only acts when `deterministic=False`
    (needs a 'dropout' rng).
    """
    n_embed: int
    n_layer: int
    vocab_size: int = 30522
    max_seq_len: int = 77
    embedding_dropout: float = 0.0
    heads: int = DEFAULT_HEADS
    dim_head: int = DEFAULT_DIM_HEAD
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, token_ids, *, deterministic: bool = True):
        if token_ids.ndim != 2:
            raise ValueError(f"token_ids must be (batch, length), got shape {token_ids.shape}")
        if token_ids.shape[1] > self.max_seq_len:
            raise ValueError(f"token_ids has length {token_ids.shape[1]}, more than max_seq_len={self.max_seq_len}")
        wrapper = TransformerWrapper(self.vocab_size, self.max_seq_len, self.n_embed, self.n_layer, self.heads,
                                     self.dim_head, self.embedding_dropout, dtype=self.dtype,
                                     param_dtype=self.param_dtype, name="transformer")
        return wrapper(token_ids, deterministic=deterministic)


# Reference params that do not change the network: where it runs, and the tokenizer switch
# (tokenisation is a separate step here, see `ldm_jax.models.tokenizers`).
_INFERENCE_IRRELEVANT = {"device", "use_tokenizer"}


def bert_embedder_from_reference(params: Mapping, **module_kwargs) -> TransformerEmbedder:
    """Builds the embedder from a reference `TransformerEmbedder` / `BERTEmbedder` params mapping.

    `module_kwargs` (dtype, param_dtype) pass through to the module.
    """
    params = dict(params)
    unknown = set(params) - {"n_embed", "n_layer", "vocab_size", "max_seq_len", "embedding_dropout"} \
        - _INFERENCE_IRRELEVANT
    if unknown:
        raise ValueError(f"unknown TransformerEmbedder/BERTEmbedder params: {sorted(unknown)}")
    for required in ("n_embed", "n_layer"):
        if required not in params:
            raise ValueError(f"TransformerEmbedder params lack the required '{required}'")
    kwargs = {k: params[k] for k in ("n_embed", "n_layer", "vocab_size", "max_seq_len", "embedding_dropout")
              if k in params}
    return TransformerEmbedder(**kwargs, **module_kwargs)


def example_inputs(module: TransformerEmbedder) -> tuple:
    """A batch of one short token sequence, enough to create every parameter."""
    return (np.zeros((1, min(4, module.max_seq_len)), np.int32),)
