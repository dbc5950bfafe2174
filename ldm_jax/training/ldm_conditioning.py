"""What an LDM is conditioned on during training: batch fields -> the UNet's {concat, context, y}.

`ConditioningPlan.of(ldm)` reads the model's traits (`ldm_jax.ldm.ModelTraits`, the facts the
sampling side uses too) and says which batch fields feed which UNet input:

| model (conditioning_key, source) | batch fields | UNet input | unconditional (dropped) input |
|---|---|---|---|
| unconditional (none) | - | - | - |
| class (crossattn, ClassEmbedder) | "label" | context = embed(label) | the null class n_classes - 1 |
| text (crossattn, CLIP / OpenCLIP / BERT) | "caption_tokens", or "context" (cached) | context = encode(tokens) | the empty prompt's tokens |
| layout (crossattn, BERT over codes) | "layout_tokens" | context | a layout without objects |
| super-resolution (concat, identity) | "low_res" at latent size | concat | zeros |
| LDM inpainting (concat, first stage) | "masked_image", "mask" | concat [E(masked), 2 mask - 1] | zeros |
| semantic (concat, SpatialRescaler) | "segmentation_onehot" | concat = rescale(one-hot) | zeros |
| SD inpainting (hybrid, in = 2C + 1) | "mask", "masked_image" + text | concat [mask, scale E(masked)] + context | text only (as SD) |
| ADM class (adm) | "label" (int classes) or "y" (vectors) | y | class num_classes - 1 / zeros |

Concat inputs follow `ldm_jax.inference.inputs` (the sampling side), the masks and masked images are
the data pipeline's (`ldm_jax.data.conditioning.inpainting_example`: mask 1 = generate; use
data.mask_fill -1 for LDM inpainting, 0 for SD inpainting). Dropping happens before a trainable
encoder, so it learns the unconditional embedding, as the reference's `ucg_training` does.
"""
import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax import images as image_io
from ldm_jax import layout
from ldm_jax.ldm import LatentDiffusion, ModelTraits

# bert-base-uncased's [CLS], [SEP] and [PAD] (the LDM BERTEmbedder's tokenizer).
BERT_CLS, BERT_SEP, BERT_PAD = 101, 102, 0
OPEN_CLIP_PAD = 0


def _missing(batch, name: str, why: str) -> KeyError:
    return KeyError(f"the batch has no {name!r}, which {why} needs (batch fields: {sorted(batch)})")


def unconditional_tokens(cond_kind: str, cond_params: dict, length: int) -> np.ndarray:
    """The (length,) token ids of the empty prompt (or of an empty layout) for a text cond stage.

    CLIP: [BOS, EOS] padded with EOS (the tokenizer's padding); OpenCLIP: [SOT, EOT] padded with 0;
    BERT (tokenizer): [CLS, SEP] padded with [PAD]; BERT over layout codes: every object slot
    "none", then the whole-image crop codes. Token ids beyond the stage's vocabulary mean the
    defaults do not fit: set train.uncond_tokens.
    """
    vocab = int(cond_params.get("vocab_size", 49408))
    if cond_kind == "clip_text":
        bos = int(cond_params.get("bos_token_id", vocab - 2))
        eos = int(cond_params.get("eos_token_id", vocab - 1))
        tokens = [bos, eos] + [eos] * (length - 2)
    elif cond_kind == "open_clip_text":
        tokens = [vocab - 2, vocab - 1] + [OPEN_CLIP_PAD] * (length - 2)
    elif cond_kind == "bert_embedder" and cond_params.get("use_tokenizer", True):
        vocab = int(cond_params.get("vocab_size", 30522))
        tokens = [BERT_CLS, BERT_SEP] + [BERT_PAD] * (length - 2)
    elif cond_kind == "bert_embedder":
        tokens = ([vocab - 1] * (length - layout.CROP_TOKENS)
                  + [layout.coordinate_token(0.0, 0.0, vocab), layout.coordinate_token(1.0, 1.0, vocab)])
    else:
        raise ValueError(f"no unconditional tokens for a {cond_kind!r} cond stage")
    tokens = np.asarray(tokens[:length], np.int32)
    if tokens.max() >= vocab:
        raise ValueError(f"the default unconditional tokens of the {cond_kind} cond stage fall outside its "
                         f"vocabulary of {vocab}: set train.uncond_tokens")
    return tokens


def _where(drop, dropped, kept):
    """Per-sample choice between the unconditional and the real input (drop: (N,) bool or None)."""
    if drop is None:
        return kept
    return jnp.where(drop.reshape(drop.shape + (1,) * (kept.ndim - 1)), dropped, kept)


@dataclasses.dataclass(frozen=True)
class ConditioningPlan:
    """The conditioning of one model, decided from its config."""
    key: str                   # none / crossattn / concat / hybrid / adm
    traits: ModelTraits
    cond_trainable: bool

    @classmethod
    def of(cls, ldm: LatentDiffusion) -> "ConditioningPlan":
        traits = ldm.traits
        plan = cls(traits.conditioning_key, traits, bool(ldm.diffusion.cond_stage_trainable))
        plan.check()
        return plan

    @property
    def has_cond_stage(self) -> bool:
        return self.traits.has_cond_stage

    @property
    def text_field(self) -> str:
        return "layout_tokens" if self.traits.is_layout else "caption_tokens"

    def check(self) -> None:
        """Fails early, naming the setting, on combinations no released model uses."""
        t = self.traits
        if self.key == "crossattn" and not (t.is_text or t.is_layout or t.is_class_conditional):
            raise ValueError(f"crossattn conditioning needs a text, layout or class cond stage, got source "
                             f"{t.cond_stage_source!r} / {t.cond_kind!r}")
        if self.key == "concat" and not (t.is_super_resolution or t.is_ldm_inpainting or t.is_semantic):
            raise ValueError(f"concat conditioning needs an identity (super-resolution), first-stage (inpainting) "
                             f"or spatial_rescaler (semantic) cond stage, got {t.cond_stage_source!r} / "
                             f"{t.cond_kind!r}")
        if self.key == "hybrid" and not (t.is_sd_inpainting and t.is_text):
            raise ValueError("hybrid conditioning is supported for SD inpainting (a text cond stage and a UNet "
                             f"of 2 * {t.latent_channels} + 1 input channels), got in_channels {t.unet_in_channels}"
                             f" and cond stage {t.cond_kind!r}")
        if self.key == "adm" and (t.num_classes is None or self.has_cond_stage):
            raise ValueError("adm conditioning takes y straight from the batch: it needs unet.num_classes and no "
                             "cond stage")

    # -- the conditioning -----------------------------------------------------------------------------

    def uncond_tokens(self, length: int, override=()) -> np.ndarray:
        """The unconditional tokens of the text / layout stage: `override` if given (train.uncond_tokens)."""
        if len(override):
            tokens = np.asarray(override, np.int32)
            if tokens.shape != (length,):
                raise ValueError(f"train.uncond_tokens has {tokens.size} tokens; the batch's "
                                 f"{self.text_field} have {length}")
            return tokens
        return unconditional_tokens(self.traits.cond_kind, self.traits.cond_params, length)

    def build(self, batch, *, encode_cond: Callable | None, encode_first_stage: Callable, latent_shape,
              scale_factor, drop: jax.Array | None, rng: jax.Array, uncond_tokens=()) -> dict[str, Any]:
        """The UNet conditioning {concat?, context?, y?} for `batch`.

        encode_cond(inputs) runs the cond stage; encode_first_stage(images, rng, sample) returns the
        unscaled first-stage latent (a posterior sample when `sample`, else its mode / VQ's h);
        `drop` (N,) marks the samples to condition on the unconditional input.
        """
        cond = {}
        if self.key in ("crossattn", "hybrid"):
            cond["context"] = self._context(batch, encode_cond, drop, uncond_tokens)
        if self.key in ("concat", "hybrid"):
            concat = self._concat(batch, encode_cond, encode_first_stage, latent_shape, scale_factor, rng)
            cond["concat"] = concat if self.key == "hybrid" else _where(drop, jnp.zeros_like(concat), concat)
        if self.key == "adm":
            cond["y"] = self._adm_labels(batch, drop)
        return cond

    def _context(self, batch, encode_cond, drop, uncond_tokens):
        t = self.traits
        if t.is_class_conditional:
            if "label" not in batch:
                raise _missing(batch, "label", "a class-conditional (ClassEmbedder) model")
            labels = jnp.asarray(batch["label"], jnp.int32)
            null = int(t.cond_params.get("n_classes", 1000)) - 1  # the reference's unconditional class
            return encode_cond(_where(drop, jnp.full_like(labels, null), labels))
        if "context" in batch and not self.cond_trainable and not t.is_layout:
            # Embeddings cached by `ldm-jax data cache-latents --embed-captions` (a frozen encoder).
            context = jnp.asarray(batch["context"], jnp.float32)
            if drop is None:
                return context
            null_tokens = self.uncond_tokens(context.shape[1], uncond_tokens)  # one embedding per token
            null = encode_cond(jnp.asarray(null_tokens)[None]).astype(jnp.float32)
            return _where(drop, jnp.broadcast_to(null, context.shape), context)
        field = self.text_field
        if field not in batch:
            raise _missing(batch, field, f"a {t.cond_kind} cond stage (data.task "
                                         f"{'layout' if t.is_layout else 'caption'})")
        tokens = jnp.asarray(batch[field], jnp.int32)
        null = jnp.asarray(self.uncond_tokens(tokens.shape[1], uncond_tokens))
        return encode_cond(_where(drop, jnp.broadcast_to(null, tokens.shape), tokens))

    def _concat(self, batch, encode_cond, encode_first_stage, latent_shape, scale_factor, rng):
        t = self.traits
        height, width = latent_shape[1], latent_shape[2]
        if t.is_super_resolution:
            if "low_res" not in batch:
                raise _missing(batch, "low_res", "a super-resolution model (data.task super_resolution)")
            low_res = jnp.asarray(batch["low_res"], jnp.float32)
            if low_res.shape[1:3] != (height, width):
                raise ValueError(f"batch['low_res'] is {low_res.shape[1]}x{low_res.shape[2]} but the latent is "
                                 f"{height}x{width}: data.sr_factor must equal the first stage's factor "
                                 f"{t.factor}")
            return low_res
        if t.is_semantic:
            if "segmentation_onehot" not in batch:
                raise _missing(batch, "segmentation_onehot", "a semantic synthesis model (data.task semantic)")
            rescaled = encode_cond(jnp.asarray(batch["segmentation_onehot"], jnp.float32))
            if rescaled.shape[1:3] != (height, width):
                raise ValueError(f"the rescaled segmentation is {rescaled.shape[1:3]}, the latent {height}x{width}")
            return rescaled.astype(jnp.float32)
        for name in ("mask", "masked_image"):
            if name not in batch:
                raise _missing(batch, name, "an inpainting model (data.task inpainting)")
        mask = image_io.nearest_resize(jnp.asarray(batch["mask"], jnp.float32), height, width)
        masked = jnp.asarray(batch["masked_image"], jnp.float32)
        if t.is_ldm_inpainting:  # the reference's cond_stage_model.encode: no scale, the mode of a KL posterior
            return jnp.concatenate([encode_first_stage(masked, rng, False), 2.0 * mask - 1.0], axis=-1)
        # SD inpainting (Stability LatentInpaintDiffusion): get_first_stage_encoding samples and scales.
        return jnp.concatenate([mask, scale_factor * encode_first_stage(masked, rng, True)], axis=-1)

    def _adm_labels(self, batch, drop):
        num_classes = self.traits.num_classes
        if isinstance(num_classes, int):
            if "label" not in batch:
                raise _missing(batch, "label", "a class-conditional (adm) UNet")
            labels = jnp.asarray(batch["label"], jnp.int32)
            return _where(drop, jnp.full_like(labels, num_classes - 1), labels)
        if "y" not in batch:
            raise _missing(batch, "y", f"an adm UNet with num_classes {num_classes!r}")
        y = jnp.asarray(batch["y"], jnp.float32)
        return _where(drop, jnp.zeros_like(y), y)
