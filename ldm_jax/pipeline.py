"""Moved: `from ldm_jax import LatentDiffusionPipeline` (the pipeline lives in `ldm_jax.inference`)."""
import warnings

from ldm_jax.inference.pipeline import LatentDiffusionPipeline

warnings.warn("ldm_jax.pipeline moved: use `from ldm_jax import LatentDiffusionPipeline`", DeprecationWarning,
              stacklevel=2)

__all__ = ["LatentDiffusionPipeline"]
