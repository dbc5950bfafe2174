"""A built wheel holds every subpackage: installed on its own (no editable checkout on the path first),
the package imports from the wheel and `ldm-jax demo --help` runs."""
import os
import pathlib
import shutil
import subprocess
import sys

from tests.conftest import REPO


def test_the_wheel_holds_every_subpackage(tmp_path):
    # Built from a copy of the sources: setuptools would reuse a stale build/ folder of the checkout.
    source = tmp_path / "source"
    shutil.copytree(REPO / "ldm_jax", source / "ldm_jax", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(tmp_path / "dist"), str(source)], check=True, cwd=tmp_path)
    wheel, = (tmp_path / "dist").glob("ldm_jax-*.whl")
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                    str(wheel)], check=True)
    packages = {str(p.parent.relative_to(REPO)) for p in (REPO / "ldm_jax").rglob("*.py")}
    assert packages == {str(p.parent.relative_to(target)) for p in (target / "ldm_jax").rglob("*.py")}
    # The installed copy comes first on the path: the checkout's editable finder is consulted after it.
    env = {**os.environ, "PYTHONPATH": str(target), "JAX_PLATFORMS": "cpu"}
    where = subprocess.run([sys.executable, "-c", "import ldm_jax.demo.run; print(ldm_jax.demo.run.__file__)"],
                           check=True, capture_output=True, text=True, env=env, cwd=tmp_path).stdout
    assert pathlib.Path(where.strip()).is_relative_to(target)
    help_text = subprocess.run([sys.executable, "-m", "ldm_jax.cli", "demo", "--help"], check=True,
                               capture_output=True, text=True, env=env, cwd=tmp_path).stdout
    assert "usage: ldm-jax demo" in help_text
