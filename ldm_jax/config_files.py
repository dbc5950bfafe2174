"""Loading a `configs/*.py` file by path, as `path/to/config.py` or `path/to/config.py:arg`."""
import importlib.util
import os
import pathlib
import types

import ml_collections


def load_config_module(path: str | os.PathLike) -> types.ModuleType:
    """The Python module of a config file (its docstring holds the launch command)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"ldm_jax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not callable(getattr(module, "get_config", None)):
        raise ValueError(f"{path} defines no get_config(); a config file exports get_config()")
    return module


def load_config(spec: str | os.PathLike) -> ml_collections.ConfigDict:
    """`get_config()` of the file, or `get_config(arg)` for the spec "path.py:arg" (a named variant)."""
    path, separator, arg = str(spec).partition(".py:")
    module = load_config_module(path + ".py" if separator else path)
    return module.get_config(arg) if arg else module.get_config()
