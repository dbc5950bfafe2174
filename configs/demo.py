"""The demo `make demo` runs (`ldm-jax demo`): both LDM stages and a pixel-space baseline on the
built-in shapes, then samples and a report. The variants and every field are defined in
`ldm_jax/demo/config.py`, the built-in default of `ldm-jax demo`.

  ldm-jax demo --out out                                   # :default
  ldm-jax demo --out out --config configs/demo.py:large    # 64x64, longer runs (for an accelerator)
"""
from ldm_jax.demo.config import get_config  # noqa: F401
