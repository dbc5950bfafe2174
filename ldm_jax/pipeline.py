"""`LatentDiffusionPipeline`: a loaded LDM / Stable Diffusion model and its low-level sampling API.

    pipe = LatentDiffusionPipeline.from_checkpoint(ckpt, config_path=yaml, use_ema=False)
    context = pipe.encode_text(token_ids)                 # (N, L) ids -> (N, L, D)
    latents = pipe.sample_latents(x_T, context=context, uncond_context=uncond, sampler="ddim",
                                  steps=50, eta=0.0, guidance_scale=7.5, rng=key)
    images = pipe.decode(latents)                         # raw decoder output, NHWC

Every jitted function is built once per pipeline; knobs (guidance, eta, strength, seed, noise)
are traced, so new values do not recompile. A batch is sharded over the local devices (a 1-D
"data" mesh over as many devices as divide it); parameters are replicated.
"""
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ldm_jax import hub
from ldm_jax.convert import compvis
from ldm_jax.diffusion.sampling import LatentSampler
from ldm_jax.diffusion.schedule import DiffusionSchedule
from ldm_jax.models import components, conditioners
from ldm_jax.models.distributions import DiagonalGaussian

_DATA = "data"


def unet_model_fn(unet):
    """model_fn(params, x, t, cond) for a UNet: cond {"concat", "context", "y"} as the reference
    DiffusionWrapper feeds them (concat along channels, context to cross-attention, y as class)."""

    def model_fn(variables, x, t, cond):
        cond = cond or {}
        unknown = set(cond) - {"concat", "context", "y"}
        if unknown:
            raise ValueError(f"unknown conditioning entries {sorted(unknown)}; expected concat, context, y")
        if cond.get("concat") is not None:
            x = jnp.concatenate([x, cond["concat"].astype(x.dtype)], axis=-1)
        return unet.apply(variables, x, t, context=cond.get("context"), y=cond.get("y"))

    return model_fn


class LatentDiffusionPipeline:
    """The first stage, UNet, optional cond stage and schedule of one LatentDiffusion model."""

    def __init__(self, config: ml_collections.ConfigDict, variables: dict[str, Any]):
        self.config = config
        self.variables = variables
        model = config.model
        self.diffusion = model.diffusion
        self.scale_factor = float(self.diffusion.scale_factor)
        self.parameterization = self.diffusion.parameterization
        self.first_stage_kind = model.first_stage.kind
        self.first_stage = components.build(model.first_stage.to_dict())
        self.unet = components.build(model.unet.to_dict())
        self.cond_stage_kind = model.cond_stage.kind if "cond_stage" in model else None
        self.cond_stage = components.build(model.cond_stage.to_dict()) if self.cond_stage_kind else None
        self.schedule = DiffusionSchedule.create(
            self.diffusion.beta_schedule, self.diffusion.timesteps, self.diffusion.linear_start,
            self.diffusion.linear_end, self.diffusion.cosine_s, v_posterior=self.diffusion.v_posterior,
            parameterization=self.parameterization)
        self.sampler = LatentSampler(unet_model_fn(self.unet), self.schedule, self.parameterization)
        self._placed: dict[int, dict] = {}  # variables replicated per mesh size
        self._decode = jax.jit(self._decode_impl)
        self._encode = jax.jit(self._encode_impl)
        self._cond = jax.jit(lambda variables, x: self.cond_stage.apply(variables, x))

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, config_path=None, use_ema: bool = False
                        ) -> "LatentDiffusionPipeline":
        """Loads a CompVis / SD checkpoint (or one we saved) with its config (see compvis.load_checkpoint)."""
        path, config_path = hub.resolve_checkpoint(path, config_path)  # hf://org/repo/file.ckpt
        config, variables = compvis.load_checkpoint(path, config_path=config_path, use_ema=use_ema)
        if "unet" not in variables or "diffusion" not in config.model:
            raise ValueError(f"{path}: not a LatentDiffusion checkpoint (it holds {sorted(variables)})")
        return cls(config, variables)

    # -- placement ------------------------------------------------------------------------------------

    def _mesh_size(self, batch: int) -> int:
        return math.gcd(batch, jax.local_device_count())

    def _mesh(self, size: int) -> Mesh:
        return Mesh(np.asarray(jax.local_devices()[:size]), (_DATA,))

    def _variables_on(self, size: int) -> dict:
        """The variables replicated over the first `size` local devices (placed once per size)."""
        if size not in self._placed:
            self._placed[size] = jax.device_put(self.variables, NamedSharding(self._mesh(size), PartitionSpec()))
        return self._placed[size]

    def _shard(self, tree, size: int, batch_axis: int = 0):
        """Splits every leaf along `batch_axis` over `size` devices (replicates a leaf that cannot split)."""
        mesh = self._mesh(size)
        split = NamedSharding(mesh, PartitionSpec(*([None] * batch_axis), _DATA))

        def place(a):
            a = jnp.asarray(a)
            divisible = a.ndim > batch_axis and a.shape[batch_axis] % size == 0
            return jax.device_put(a, split if divisible else NamedSharding(mesh, PartitionSpec()))

        return jax.tree.map(place, tree)

    # -- conditioning ---------------------------------------------------------------------------------

    def encode_text(self, token_ids) -> jax.Array:
        """Token ids (N, L) -> context (N, L, D) from the cond stage (CLIP, OpenCLIP or LDM BERT)."""
        if self.cond_stage_kind not in ("clip_text", "open_clip_text", "bert_embedder"):
            raise ValueError(f"encode_text needs a text cond stage, this model has {self.cond_stage_kind!r}")
        return self._cond(self.variables["cond_stage"], jnp.asarray(token_ids, jnp.int32))

    def encode_class(self, labels) -> jax.Array:
        """Class labels (N,) -> context (N, 1, D) from a class_embedder cond stage."""
        if self.cond_stage_kind != "class_embedder":
            raise ValueError(f"encode_class needs a class_embedder cond stage, this model has {self.cond_stage_kind!r}")
        return self._cond(self.variables["cond_stage"], jnp.asarray(labels, jnp.int32))

    def unconditional_class_labels(self, batch_size: int) -> jax.Array:
        """The null class of a class_embedder model (its last row), for guidance."""
        return conditioners.unconditional_class_labels(self.cond_stage, batch_size)

    def _conditioning(self, batch: int, context, uncond_context, class_labels, more: dict):
        cond, uncond = {}, {}
        uncond_labels = more.pop("uncond_class_labels", None)
        if class_labels is not None:
            if self.cond_stage_kind == "class_embedder":
                context = self.encode_class(class_labels)
                uncond_context = self.encode_class(self.unconditional_class_labels(batch) if uncond_labels is None
                                                   else uncond_labels)
            elif self.diffusion.conditioning_key == "adm" or self.unet.num_classes is not None:
                cond["y"] = jnp.asarray(class_labels, jnp.int32)
                if uncond_labels is not None:
                    uncond["y"] = jnp.asarray(uncond_labels, jnp.int32)
            else:
                raise ValueError("class_labels need a class_embedder cond stage or a class-conditional UNet")
        if context is not None:
            cond["context"] = jnp.asarray(context)
            if uncond_context is not None:
                uncond["context"] = jnp.asarray(uncond_context)
        concat, uncond_concat = more.pop("concat", None), more.pop("uncond_concat", None)
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
                       return_intermediates: bool = False, **more):
        """Samples latents (N, h, w, C) from x_T, with classifier-free guidance when an unconditional
        context is given. Extra keywords: concat (and uncond_concat), uncond_class_labels, init_latents,
        strength, mask (1 = generate), seed, discretize, progress (default True)."""
        x_T = jnp.asarray(x_T, jnp.float32)
        batch = x_T.shape[0]
        more = dict(more)
        cond, uncond = self._conditioning(batch, context, uncond_context, class_labels, more)
        knobs = {k: more.pop(k) for k in ("init_latents", "mask", "strength", "seed", "discretize", "progress")
                 if k in more}
        if more:
            raise TypeError(f"sample_latents got unexpected keyword arguments {sorted(more)}")
        size = self._mesh_size(batch)
        x_T, cond, uncond = self._shard((x_T, cond, uncond), size)
        for name in ("init_latents", "mask"):
            if knobs.get(name) is not None:
                knobs[name] = self._shard(jnp.asarray(knobs[name], jnp.float32), size)
        if noise is not None:
            noise = self._shard(jnp.asarray(noise, jnp.float32), size, batch_axis=1)
        return self.sampler(self._variables_on(size)["unet"], x_T, cond, uncond, sampler=sampler, steps=steps,
                            guidance_scale=guidance_scale, eta=eta, rng=rng, noise=noise,
                            return_intermediates=return_intermediates, **knobs)

    # -- first stage ----------------------------------------------------------------------------------

    def _decode_impl(self, variables, latents):
        z = latents / self.scale_factor
        return self.first_stage.apply(variables, z, method="decode")  # VQ decode quantises first

    def _encode_impl(self, variables, images):
        h = self.first_stage.apply(variables, images, method="encode")
        if isinstance(h, DiagonalGaussian):  # KL; VQ gives its pre-quantisation h, the identity the images
            h = h.mode()
        return self.scale_factor * h

    def decode(self, latents) -> jax.Array:
        """Latents (N, h, w, C) -> raw decoder output (N, H, W, 3): decode(latents / scale_factor)
        (for an identity first stage, the latents are the pixels)."""
        latents = jnp.asarray(latents, jnp.float32)
        size = self._mesh_size(latents.shape[0])
        return self._decode(self._variables_on(size)["first_stage"], self._shard(latents, size))

    def encode(self, images) -> jax.Array:
        """Images (N, H, W, 3) in [-1, 1] -> latents times scale_factor (KL: the posterior mode)."""
        images = jnp.asarray(images, jnp.float32)
        size = self._mesh_size(images.shape[0])
        return self._encode(self._variables_on(size)["first_stage"], self._shard(images, size))

    def __call__(self, **kwargs):
        """Samples the task the inputs describe and returns PIL images: see `ldm_jax.tasks.generate`."""
        from ldm_jax import tasks
        return tasks.generate(self, **kwargs)
