"""Checking a config section against its defaults: unknown fields (with the closest valid name) and
values of the wrong type, each named by its dotted path. Nested sections are checked recursively.

    errors = field_errors(config.train.to_dict(), default_train_config().to_dict(), "config.train")
"""
import difflib
from typing import Mapping


def field_errors(values: Mapping, defaults: Mapping, prefix: str, optional: Mapping[str, type] | None = None
                 ) -> list[str]:
    """Problems of `values` against `defaults`. `optional` gives the type of fields whose default is None."""
    optional = optional or {}
    errors = []
    for name, value in values.items():
        dotted = f"{prefix}.{name}"
        if name not in defaults:
            close = difflib.get_close_matches(name, list(defaults), n=1)
            hint = f"; did you mean {prefix}.{close[0]}?" if close else f"; valid fields: {', '.join(defaults)}"
            errors.append(f"{dotted}: unknown field{hint}")
            continue
        default = defaults[name]
        if isinstance(default, Mapping):
            if isinstance(value, Mapping):
                errors += field_errors(value, default, dotted)
            else:
                errors.append(f"{dotted}: expected a section, got {type(value).__name__} {value!r}")
            continue
        expected = optional.get(name, type(default))
        if value is None and (name in optional or default is None):
            continue
        if default is None and name not in optional:
            continue  # any type allowed
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            continue
        if expected in (list, tuple) and isinstance(value, (list, tuple)):
            continue
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            errors.append(f"{dotted}: expected {expected.__name__}{' or None' if name in optional else ''}, "
                          f"got {type(value).__name__} {value!r}")
    return errors
