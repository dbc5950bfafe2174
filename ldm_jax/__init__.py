"""ldm-jax: Latent Diffusion Models (Rombach et al., 2022) in JAX / Flax.

    from ldm_jax import LatentDiffusionPipeline
"""

__version__ = "0.1.0"
__all__ = ["LatentDiffusionPipeline"]


def __getattr__(name: str):
    # Lazy, so `import ldm_jax` (the CLI, config files) does not import JAX.
    if name == "LatentDiffusionPipeline":
        from ldm_jax.inference.pipeline import LatentDiffusionPipeline
        return LatentDiffusionPipeline
    raise AttributeError(f"module 'ldm_jax' has no attribute {name!r}")
