"""Loading a `configs/*.py` file by path, as `path/to/config.py` or `path/to/config.py:arg`."""
import ast
import difflib
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


def apply_overrides(config: ml_collections.ConfigDict, overrides: list[str]) -> ml_collections.ConfigDict:
    """`config` with each "dotted.field=value" set, as `--config.dotted.field=value` on a command line.

    The value is parsed as a Python literal (numbers, True/False, None, lists, quoted strings) and
    falls back to the plain string; it must fit the field's type. An unknown field fails with the
    closest valid name.
    """
    for override in overrides:
        dotted, separator, text = override.partition("=")
        if not separator:
            raise ValueError(f"--config.{override}: expected --config.<field>=<value>")
        *parents, name = dotted.split(".")
        section = config
        for depth, part in enumerate(parents):
            section = _child(section, part, ".".join(parents[:depth]))
        _child(section, name, ".".join(parents))
        value = _parse_value(text)
        current = section[name]
        if isinstance(current, bool) and not isinstance(value, bool) or (
                isinstance(current, (int, float)) and not isinstance(current, bool)
                and not isinstance(value, (int, float))):
            raise ValueError(f"--config.{dotted}: expected {type(current).__name__}, got {text!r}")
        if isinstance(current, float) and isinstance(value, int):
            value = float(value)
        if isinstance(current, str) and not isinstance(value, str):
            value = text
        with section.ignore_type():
            section[name] = value
    return config


def _child(section, name: str, where: str):
    if not isinstance(section, ml_collections.ConfigDict) or name not in section:
        known = list(section.keys()) if isinstance(section, ml_collections.ConfigDict) else []
        close = difflib.get_close_matches(name, known, n=1)
        field = f"config.{where}.{name}" if where else f"config.{name}"
        hint = f"; did you mean {field.rsplit('.', 1)[0]}.{close[0]}?" if close else ""
        raise ValueError(f"--{field}: no such field{hint}")
    return section[name]


def _parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        lowered = text.lower()
        return {"true": True, "false": False, "none": None}.get(lowered, text)
