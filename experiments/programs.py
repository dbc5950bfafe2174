"""What the experiments need of programs built without a data pipeline: the shapes of one training
batch of a config's stage (`bench_scale.py` compiles with them; `device_check.py` fills them with
zeros) and XLA's estimate of a compiled program's peak memory."""
import jax
import jax.numpy as jnp


def abstract_batch(config, stage, global_batch: int, latent_cache: bool = False) -> dict:
    """ShapeDtypeStructs of one global batch of the fields the stage reads (images and conditioning).

    `latent_cache`: an LDM batch as `ldm-jax data cache-latents` writes it (KL "mean" + "std", or VQ
    "latent", and the "context" of a frozen text encoder), so the step runs neither of them.
    """
    if "unet" not in config.model:
        side = int(config.data.image_size)
        return {"image": jax.ShapeDtypeStruct((global_batch, side, side, 3), jnp.float32)}
    traits = stage.ldm.traits
    side = traits.latent_size * traits.factor
    batch = {"image": jax.ShapeDtypeStruct((global_batch, side, side, 3), jnp.float32)}
    if latent_cache:
        latent = jax.ShapeDtypeStruct((global_batch, traits.latent_size, traits.latent_size, traits.latent_channels),
                                      jnp.float32)
        is_kl = config.model.first_stage.kind == "autoencoder_kl"
        batch = {"mean": latent, "std": latent} if is_kl else {"latent": latent}
    if traits.is_text and latent_cache and not stage.plan.cond_trainable:
        width = int(config.model.unet.params.context_dim)
        batch["context"] = jax.ShapeDtypeStruct((global_batch, caption_length(traits), width), jnp.float32)
    elif traits.is_text:
        batch["caption_tokens"] = jax.ShapeDtypeStruct((global_batch, caption_length(traits)), jnp.int32)
    elif traits.is_class_conditional or traits.num_classes is not None:
        batch["label"] = jax.ShapeDtypeStruct((global_batch,), jnp.int32)
    elif traits.has_cond_stage or traits.concat_channels:
        raise ValueError(f"batches are built here for unconditional, text and class models, not "
                         f"{traits.cond_kind!r} / {traits.conditioning_key!r}")
    return batch


def caption_length(traits) -> int:
    """Tokens per caption of a text model's encoder (CLIP, OpenCLIP or BERT params)."""
    params = traits.cond_params
    return int(params.get("max_position_embeddings", params.get("context_length", params.get("max_seq_len", 77))))


def peak_bytes(memory) -> int:
    """A compiled program's peak per device from its `memory_analysis()`: arguments + outputs - the
    donated bytes aliased to outputs + temporaries."""
    return (memory.argument_size_in_bytes + memory.output_size_in_bytes - memory.alias_size_in_bytes
            + memory.temp_size_in_bytes)
