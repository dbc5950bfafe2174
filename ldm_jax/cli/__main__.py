"""`python -m ldm_jax.cli`: the `ldm-jax` command."""
import sys

from ldm_jax.cli import main

sys.exit(main())
