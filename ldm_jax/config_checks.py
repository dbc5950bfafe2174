"""Config sections as plain data, and checked against their defaults.

`to_plain_dict` turns a ConfigDict (or any mapping, e.g. a section read from YAML) into plain dicts and
tuples, the form the reference builders and ConfigDicts take. `field_errors` reports unknown fields
(with the closest valid name) and values of the wrong type, each named by its dotted path; nested
sections are checked recursively.

    errors = field_errors(config.train.to_dict(), default_train_config().to_dict(), "config.train")
"""
import difflib
from typing import Any, Mapping


def to_plain_dict(value: Any) -> Any:
    """ConfigDicts and mappings -> dicts with str keys, lists and tuples -> tuples, recursively.

    Tuples, not lists, whatever file a value came from: they are immutable and hashable, as a Flax
    module field must be, and compare equal to the tuple defaults of the configs.
    """
    if hasattr(value, "to_dict"):  # a ConfigDict, which is not a Mapping
        value = value.to_dict()
    if isinstance(value, Mapping):
        return {str(key): to_plain_dict(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return tuple(to_plain_dict(item) for item in value)
    return value


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
