"""Config files and their command-line overrides, as Flax examples and big_vision launch them.

A config is `path/to/config.py` (its `get_config()`) or `path/to/config.py:arg` (`get_config(arg)`,
a named variant); `--config.a.b=value` (or `--config.a.b value`) sets one field, parsed and
type-checked by `ml_collections.config_flags`.
"""
import ast
import difflib
import importlib.util
import os
import pathlib
import re
import types

import ml_collections
from absl import flags
from ml_collections import config_flags


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


def apply_overrides(config: ml_collections.ConfigDict, args: list[str]) -> ml_collections.ConfigDict:
    """`config`, updated in place by the command-line arguments `args` ("--config.a.b=value", ...).

    `config_flags` parses them on a private FlagValues: "--config.a.b=v", "--config.a.b v", and for a
    bool "--config.a.b" / "--noconfig.a.b". Before it runs, an unknown field fails with the closest
    valid name; a value that does not parse fails with the field's type.
    """
    argv = ["ldm-jax", *args]
    for arg in args:
        if match := re.match(r"--?(?:no)?config\.([^=]+)", arg):
            _field_type(config, match[1])
    flag_values = flags.FlagValues()
    # A ConfigDict, not a file: `train` adds its defaults between loading and the overrides. Unlocked, as loaded.
    config_flags.DEFINE_config_dict("config", config, flag_values=flag_values, lock_config=False, sys_argv=argv)
    try:
        unparsed = flag_values(argv)[1:]
    except flags.IllegalFlagValueError as error:
        # absl says "flag --config.a.b=value: why"; add the type the field holds.
        path = re.match(r"flag --config\.([^=]+)=", str(error))
        expected = f" (expected {_field_type(config, path[1]).__name__})" if path else ""
        raise ValueError(f"{error}{expected}") from None
    if unparsed:
        raise ValueError(f"unrecognized arguments: {' '.join(unparsed)} (a bool field takes --config.<field>=false)")
    return config


def _field_type(config: ml_collections.ConfigDict, path: str) -> type:
    """The type of field `path` ("a.b") of `config`; ValueError naming the closest field if it has none."""
    section = config
    for depth, part in enumerate(path.split(".")):
        if not isinstance(section, ml_collections.ConfigDict) or part not in section:
            known = list(section.keys()) if isinstance(section, ml_collections.ConfigDict) else []
            where = ".".join(["config", *path.split(".")[:depth]])
            close = difflib.get_close_matches(part, known, n=1)
            hint = f"; did you mean {where}.{close[0]}?" if close else ""
            raise ValueError(f"--{where}.{part}: no such field{hint}")
        holder, section = section, section[part]
    return holder.get_type(part)


class _ListParser(flags.ArgumentParser):
    """A list field from "[1, 2]" (or a tuple): config_flags parses tuples but not lists."""

    def parse(self, argument):
        try:
            value = ast.literal_eval(argument) if isinstance(argument, str) else argument
        except SyntaxError as error:  # absl reports ValueErrors as a bad flag value
            raise ValueError(error.msg) from None
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{argument!r} is not a list literal")
        return list(value)

    def flag_type(self):
        return "list"


# ch_mult, attention_resolutions, prompts: our configs hold lists, which the ecosystem's configs do not.
config_flags.register_flag_parser_for_type(list, _ListParser())
