"""Runs every model of a loaded checkpoint once on small random inputs: is the checkpoint usable?

Used by `ldm-jax check` right after a conversion; it reports sizes and output statistics,
and fails when an output is not finite.
"""
import time
from typing import Iterator, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ldm_jax.models import components


def run_components(config: ml_collections.ConfigDict, variables: Mapping, seed: int = 0) -> Iterator[str]:
    """Yields one line per component: kind, parameter count, output shape and statistics."""
    rng = jax.random.key(seed)
    for section, section_variables in variables.items():
        component = config.model[section]
        module = components.build(component.to_dict())
        rng, inputs_rng = jax.random.split(rng)
        inputs = _random_like(components.example_inputs(component.kind, module), inputs_rng)
        start = time.perf_counter()
        output = jax.jit(module.apply)(section_variables, *inputs)
        output = jax.tree.leaves(output)[0]  # a posterior, a tuple or an array: its first array
        output = np.asarray(jax.block_until_ready(output))
        seconds = time.perf_counter() - start
        num_params = sum(np.size(leaf) for leaf in jax.tree.leaves(section_variables))
        if not np.all(np.isfinite(output)):
            raise FloatingPointError(f"{section} ({component.kind}) produced non-finite outputs")
        yield (f"{section:<12} {component.kind:<15} {num_params / 1e6:9.2f} M params  "
               f"in {_shapes(inputs)} -> out {tuple(output.shape)}  mean {output.mean():+.4f} "
               f"std {output.std():.4f}  {seconds:.1f}s")


def _random_like(inputs: tuple, rng: jax.Array) -> tuple:
    """Floating inputs replaced by N(0, 1) draws of the same shape; integer ones kept."""
    keys = jax.random.split(rng, len(inputs))
    return tuple(jax.random.normal(key, x.shape, x.dtype)
                 if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jnp.floating) else x
                 for key, x in zip(keys, inputs))


def _shapes(inputs: tuple) -> str:
    return ", ".join(str(tuple(x.shape)) for x in inputs if hasattr(x, "shape"))
