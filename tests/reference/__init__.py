"""Reference outputs of the original code, committed with the generators that wrote them (README.md)."""
import pathlib

import numpy as np

FOLDER = pathlib.Path(__file__).resolve().parent


def fixture(name: str) -> dict[str, np.ndarray]:
    """The arrays of a committed reference file; a missing one fails (a clone must check everything)."""
    path = FOLDER / name
    if not path.exists():
        raise FileNotFoundError(f"reference fixture {path} is missing; see {FOLDER / 'README.md'} to regenerate it")
    with np.load(path) as arrays:
        return dict(arrays)


def fixture_path(name: str):
    """The path of a committed reference file (weights, configs); a missing one fails, as `fixture`."""
    path = FOLDER / name
    if not path.exists():
        raise FileNotFoundError(f"reference fixture {path} is missing; see {FOLDER / 'README.md'} to regenerate it")
    return path
