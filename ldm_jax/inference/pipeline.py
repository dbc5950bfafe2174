"""`LatentDiffusionPipeline`: a loaded LDM / Stable Diffusion model and its low-level sampling API.

    pipe = LatentDiffusionPipeline.from_checkpoint(ckpt, config_path=yaml, use_ema=False)   # dtype=jnp.bfloat16
    context = pipe.encode_text(token_ids)                 # (N, L) ids -> (N, L, D)
    latents = pipe.sample_latents(x_T, context=context, uncond_context=uncond, sampler="ddim",
                                  steps=50, eta=0.0, guidance_scale=7.5, rng=key)
    images = pipe.decode(latents)                         # raw decoder output, NHWC
    pil_images = pipe(prompt="a red bus", tokenizer=vocab_dir, num_steps=50)   # any task, see `__call__`

A call walks one way: `inference.tasks.prepare` turns the user's inputs into sampler inputs (its
task functions use this pipeline's encoders), `sample_latents` runs the sampler over the
`LatentDiffusion` core's UNet, and `decode` runs its decoder, in tiles above `max_decode_pixels`.

Every jitted function is built once per pipeline; knobs (guidance, eta, strength, seed, noise)
are traced, so new values do not recompile. A batch is sharded over the local devices (a 1-D
"data" mesh over as many devices as divide it); parameters are replicated.
"""
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ldm_jax import compile_options, hub
from ldm_jax import images as image_io
from ldm_jax.convert import compvis
from ldm_jax.diffusion.sampling import LatentSampler
from ldm_jax.inference import tasks, tiled_decode
from ldm_jax.ldm import LatentDiffusion, ModelTraits
from ldm_jax.models import conditioners
from ldm_jax.parallel.local import LocalDevices, in_context, shard_batch


COMPUTE_DTYPES = ("float32", "bfloat16", "float16")


def check_compute_dtype(dtype, backend: str) -> None:
    """A sampling compute dtype the backend can run: float16 has no arithmetic units on TPUs."""
    if dtype is None:
        return
    name = jnp.dtype(dtype).name
    if name not in COMPUTE_DTYPES:
        raise ValueError(f"dtype must be one of {COMPUTE_DTYPES}, got {name}")
    if name == "float16" and backend == "tpu":
        raise ValueError("TPUs compute in bfloat16, not float16: use dtype=jnp.bfloat16")


class LatentDiffusionPipeline:
    """A `LatentDiffusion` model with its variables on the local devices, and its jitted functions."""

    def __init__(self, config: ml_collections.ConfigDict, variables: dict[str, Any], dtype=None):
        """`dtype` (e.g. `jnp.bfloat16`) is the models' compute dtype; the weights, the sampler's latents
        and the decoded images stay float32. None: float32 throughout."""
        check_compute_dtype(dtype, jax.default_backend())
        self.ldm = LatentDiffusion(config, **({} if dtype is None else {"dtype": jnp.dtype(dtype)}))
        self.variables = variables
        self.devices = LocalDevices(variables)
        options = compile_options.forward_only()
        self.sampler = LatentSampler(self.ldm.apply_unet, self.ldm.schedule, self.ldm.parameterization,
                                     jit_kwargs={"compiler_options": options})
        ldm = self.ldm
        self._decode = jax.jit(lambda v, latents: ldm.decode(v["first_stage"], latents).astype(jnp.float32),
                               compiler_options=options)
        self._encode = jax.jit(lambda v, images: ldm.encode(v["first_stage"], images), compiler_options=options)
        self._cond = jax.jit(lambda v, inputs: ldm.apply_cond_stage(v["cond_stage"], inputs),
                             compiler_options=options)

    @property
    def config(self) -> ml_collections.ConfigDict:
        return self.ldm.config

    @property
    def traits(self) -> ModelTraits:
        """What the model is: its conditioning, sizes and task (see `ldm_jax.ldm.ModelTraits`)."""
        return self.ldm.traits

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, config_path=None, use_ema: bool = False, dtype=None
                        ) -> "LatentDiffusionPipeline":
        """Loads a CompVis / SD checkpoint (or one we saved) with its config (see compvis.load_checkpoint);
        `dtype`: the compute dtype (see `__init__`)."""
        path, config_path = hub.resolve_checkpoint(path, config_path)  # hf://org/repo/file.ckpt
        config, variables = compvis.load_checkpoint(path, config_path=config_path, use_ema=use_ema)
        if "unet" not in variables or "diffusion" not in config.model:
            raise ValueError(f"{path}: not a LatentDiffusion checkpoint (it holds {sorted(variables)})")
        return cls(config, variables, dtype)

    # -- conditioning ---------------------------------------------------------------------------------

    def encode_text(self, token_ids) -> jax.Array:
        """Token ids (N, L) -> context (N, L, D) from the cond stage (CLIP, OpenCLIP or LDM BERT)."""
        if self.traits.cond_kind not in ("clip_text", "open_clip_text", "bert_embedder"):
            raise ValueError(f"encode_text needs a text cond stage, this model has {self.traits.cond_kind!r}")
        return self.encode_condition(jnp.asarray(token_ids, jnp.int32))

    def encode_class(self, labels) -> jax.Array:
        """Class labels (N,) -> context (N, 1, D) from a class_embedder cond stage."""
        if not self.traits.is_class_conditional:
            raise ValueError(f"encode_class needs a class_embedder cond stage, this model has "
                             f"{self.traits.cond_kind!r}")
        return self.encode_condition(jnp.asarray(labels, jnp.int32))

    def encode_condition(self, inputs) -> jax.Array:
        """The cond stage on its inputs (token ids, class labels, a one-hot segmentation map)."""
        return self.devices.run(self._cond, jnp.asarray(inputs))

    def unconditional_class_labels(self, batch_size: int) -> jax.Array:
        """The null class of a class_embedder model (its last row), for guidance."""
        return conditioners.unconditional_class_labels(self.ldm.cond_stage, batch_size)

    def _conditioning(self, batch: int, context, uncond_context, class_labels, uncond_class_labels, concat,
                      uncond_concat):
        cond, uncond = {}, {}
        if class_labels is not None:
            if self.traits.is_class_conditional:
                context = self.encode_class(class_labels)
                uncond_context = self.encode_class(self.unconditional_class_labels(batch)
                                                   if uncond_class_labels is None else uncond_class_labels)
            elif self.traits.conditioning_key == "adm" or self.traits.num_classes is not None:
                cond["y"] = jnp.asarray(class_labels, jnp.int32)
                if uncond_class_labels is not None:
                    uncond["y"] = jnp.asarray(uncond_class_labels, jnp.int32)
            else:
                raise ValueError("class_labels need a class_embedder cond stage or a class-conditional UNet")
        if context is not None:
            cond["context"] = jnp.asarray(context)
            if uncond_context is not None:
                uncond["context"] = jnp.asarray(uncond_context)
        if concat is not None:
            cond["concat"] = jnp.asarray(concat)
        if not uncond:
            return cond, None  # no guidance without an unconditional branch
        if concat is not None:  # the reference guides concat models with the same c_concat
            uncond["concat"] = cond["concat"] if uncond_concat is None else jnp.asarray(uncond_concat)
        if set(uncond) != set(cond):
            raise ValueError(f"uncond conditioning {sorted(uncond)} does not match cond {sorted(cond)}")
        return cond, uncond

    # -- sampling -------------------------------------------------------------------------------------

    def sample_latents(self, x_T, context=None, uncond_context=None, class_labels=None, sampler: str = "ddim",
                       steps: int = 10, eta: float = 0.0, guidance_scale: float = 3.0, noise=None, rng=None,
                       return_intermediates: bool = False, *, uncond_class_labels=None, concat=None,
                       uncond_concat=None, init_latents=None, strength: float = 1.0, mask=None,
                       seed: int | None = None, discretize: str | None = None, progress: bool = True):
        """Samples latents (N, h, w, C) from x_T, with classifier-free guidance when an unconditional
        context (or class) is given.

        `concat` (and `uncond_concat`): extra UNet input channels; `init_latents` + `strength`:
        img2img; `mask` (1 = generate) with `init_latents`: latent-blending inpainting; `noise`
        (steps, *x_T.shape): the per-step noises of a stochastic sampler; `seed` instead of `rng`.
        """
        x_T = jnp.asarray(x_T, jnp.float32)
        cond, uncond = self._conditioning(x_T.shape[0], context, uncond_context, class_labels, uncond_class_labels,
                                          concat, uncond_concat)
        mesh = self.devices.mesh(x_T.shape[0])
        x_T, cond, uncond = shard_batch((x_T, cond, uncond), mesh)
        if init_latents is not None:
            init_latents = shard_batch(jnp.asarray(init_latents, jnp.float32), mesh)
        if mask is not None:
            mask = shard_batch(jnp.asarray(mask, jnp.float32), mesh)
        if noise is not None:
            noise = shard_batch(jnp.asarray(noise, jnp.float32), mesh, batch_axis=1)
        with in_context(mesh):
            return self.sampler(self.devices.variables_on(mesh)["unet"], x_T, cond, uncond, sampler=sampler,
                                steps=steps, discretize=discretize, guidance_scale=guidance_scale, eta=eta, rng=rng,
                                seed=seed, noise=noise, init_latents=init_latents, strength=strength, mask=mask,
                                return_intermediates=return_intermediates, progress=progress)

    # -- first stage ----------------------------------------------------------------------------------

    def decode(self, latents, max_decode_pixels: int | None = None) -> jax.Array:
        """Latents (N, h, w, C) -> raw decoder output (N, H, W, 3): decode(latents / scale_factor)
        (for an identity first stage, the latents are the pixels). Images of more than
        `max_decode_pixels` pixels are decoded in overlapping tiles of the trained latent size."""
        latents = jnp.asarray(latents, jnp.float32)
        decode = lambda z: self.devices.run(self._decode, z)
        factor, tile = self.traits.factor, self.traits.latent_size
        if not tiled_decode.needs_tiling(latents.shape[1] * factor, latents.shape[2] * factor, max_decode_pixels):
            return decode(latents)
        return tiled_decode.decode_tiled(decode, latents, tile, tile // 4, factor)

    def encode(self, images) -> jax.Array:
        """Images (N, H, W, 3) in [-1, 1] -> latents times scale_factor (KL: the posterior mode)."""
        return self.devices.run(self._encode, jnp.asarray(images, jnp.float32))

    # -- every task, from the user's inputs to PIL images ---------------------------------------------

    def __call__(self, prompt: str | Sequence[str] | None = None, *, negative_prompt: str | Sequence[str] = "",
                 class_label=None, image=None, mask=None, low_res=None, segmentation=None, layout=None,
                 num_steps: int = 50, sampler: str = "ddim", discretize: str | None = None,
                 guidance_scale: float = 7.5, eta: float = 0.0, seed: int = 0, height: int | None = None, width: int | None = None, batch_size: int | None = None,
                 strength: float | None = None, tokenizer=None, progress: bool = True,
                 max_decode_pixels: int | None = tiled_decode.DEFAULT_MAX_DECODE_PIXELS,
                 return_latents: bool = False):
        """Samples the task the inputs describe and returns a list of PIL images (the tasks: see
        `ldm_jax.inference.tasks`).

        Guidance applies to text and class conditioning (uncond: `negative_prompt` / the null class);
        other tasks sample without it. `strength` (img2img, default 0.75; 1.0 with a mask) is the
        fraction of the schedule re-run from the noised input. `discretize` picks the timestep spacing
        (None: the sampler's own default, see `ldm_jax.diffusion.sampling`). `return_latents=True` also returns the
        final latents: `(images, latents)`. The batch is split over the local devices.
        """
        inputs = tasks.prepare(self, prompt=prompt, negative_prompt=negative_prompt, class_label=class_label,
                               image=image, mask=mask, low_res=low_res, segmentation=segmentation, layout=layout,
                               height=height, width=width, batch_size=batch_size, strength=strength,
                               tokenizer=tokenizer)
        noise_key, sample_key = jax.random.split(jax.random.PRNGKey(seed))
        x_T = jax.random.normal(noise_key, inputs.latent_shape, jnp.float32)
        latents = self.sample_latents(
            x_T, context=inputs.context, uncond_context=inputs.uncond_context if inputs.guided else None,
            class_labels=inputs.class_labels, sampler=sampler, steps=num_steps, discretize=discretize, eta=eta,
            guidance_scale=guidance_scale if inputs.guided else 1.0, rng=sample_key, progress=progress,
            concat=inputs.concat, init_latents=inputs.init_latents, mask=inputs.mask,
            strength=1.0 if inputs.strength is None else inputs.strength)
        decoded = self.decode(latents, max_decode_pixels)
        if inputs.pixel_mask is not None:   # the reference inpaint.py keeps the known pixels
            decoded = (1.0 - inputs.pixel_mask) * inputs.pixel_image + inputs.pixel_mask * jnp.clip(decoded, -1, 1)
        images = image_io.array_to_images(np.asarray(decoded))
        return (images, latents) if return_latents else images
