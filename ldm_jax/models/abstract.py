"""The parameter tree of a module as shapes and dtypes, computed without allocating it.

Checkpoint loading (`ldm_jax.convert`), parameter counts and sharding all start from this tree:

    abstract_module_params(module, *example_inputs) -> {"Encoder_0": {"kernel": ShapeDtypeStruct, ...}}
"""
import flax.linen as nn
import jax


def abstract_module_params(module: nn.Module, *example_inputs, **init_kwargs) -> dict:
    """Shapes and dtypes of `module`'s parameters, without allocating them ({} for a module without any,
    such as the identity first stage)."""
    variables = jax.eval_shape(lambda: module.init(jax.random.key(0), *example_inputs, **init_kwargs))
    return nn.unbox(variables).get("params", {})
