"""XLA compiler options for the programs that only run a model forward: sampling, encoding, decoding,
the training stages' image logging.

On XLA:CPU, XLA's default MLIR fusion emitters keep compiler memory for every fusion until the whole
program is compiled. Compiling the 64-channel SD-shaped UNet's forward raised the process's RSS by
510 MiB with them, 140 MiB with the older emitters, and peak RSS when sampling went from 1.77x
diffusers' to 1.19x (experiments/README.md, `bench_sampling.py`). The older emitters run a forward's
fusions as fast: the SD-width UNet's elementwise fusions took 23 ms more of a 4.4 s forward. Training
steps keep the default, because their backward fusions ran 1.7x slower on the older emitters.
The option is XLA:CPU's: programs for other backends get none.
"""
import jax


def forward_only(backend: str | None = None) -> dict | None:
    """`compiler_options` for `jax.jit` of a forward-only program on `backend` (default: JAX's)."""
    if (backend or jax.default_backend()) == "cpu":
        return {"xla_cpu_use_fusion_emitters": False}
    return None
