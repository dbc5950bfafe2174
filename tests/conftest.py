"""Test set-up: 8 simulated CPU devices, a persistent compilation cache, the reference fixtures."""
import json
import os
import pathlib

# Before JAX initialises its backend: simulate a small mesh on the CPU. The tests compile far more
# than they run (tiny models), so XLA's cheapest optimisation level: compiles ~35% faster.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
jax.config.update("jax_compilation_cache_dir",  # JAX_COMPILATION_CACHE_DIR: another (e.g. empty) one
                  os.environ.get("JAX_COMPILATION_CACHE_DIR", str(REPO / ".cache" / "jax_compilation")))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

FIXTURES = pathlib.Path(os.environ.get("LDM_JAX_FIXTURES", REPO / "tests" / "reference" / "compvis"))
# Weights stored once, inside the full checkpoint: case -> (its keys' prefix there, whether the case's
# own keys drop it: clip_text's keep theirs, as SD v1 checkpoints and its fixture use them).
IN_FULL_CHECKPOINT = {"ae_kl": ("first_stage_model.", True), "unet_crossattn": ("model.diffusion_model.", True),
                      "clip_text": ("cond_stage_model.", False)}


def pytest_collection_modifyitems(items):
    """Files holding slow tests run first: `--dist loadfile --no-loadscope-reorder` hands files to the
    workers in this order (xdist's own reorder puts files with many tests first), and with the long ones
    first no worker is left alone at the end with one (about 100 s of wall time)."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: each file's own order is kept


@pytest.fixture(scope="session")
def compvis_fixtures() -> pathlib.Path:
    """The folder of reference outputs of the original PyTorch code (tests/reference/README.md)."""
    if not (FIXTURES / "manifest.json").exists():  # a clone must check everything: fail, never skip
        pytest.fail(f"reference fixtures missing at {FIXTURES}: regenerate them with "
                    f"tests/reference/generate_module_fixtures.py (see tests/reference/README.md)")
    return FIXTURES


def case_weights(folder: pathlib.Path, case: str) -> dict[str, np.ndarray]:
    """The weights of a fixture case under the module's own keys: `<case>.safetensors`, or for the cases
    that make up the full checkpoint, its part of `full_ckpt.safetensors`."""
    from safetensors.numpy import load_file

    if (folder / f"{case}.safetensors").exists():
        return load_file(folder / f"{case}.safetensors")
    prefix, drop = IN_FULL_CHECKPOINT[case]
    full = load_file(folder / "full_ckpt.safetensors")
    return {(k[len(prefix):] if drop else k): v for k, v in full.items() if k.startswith(prefix)}


def nchw_to_nhwc(x: np.ndarray) -> np.ndarray:
    return np.moveaxis(x, 1, -1) if x.ndim == 4 else x


def assert_matches_reference(actual, reference, name: str = "output", rel: float = 1e-4):
    """The fixtures' module tolerance: max|a - b| <= rel * max(1, max|ref|)."""
    actual, reference = np.asarray(actual), np.asarray(reference)
    assert actual.shape == reference.shape, f"{name}: shape {actual.shape} != reference {reference.shape}"
    bound = rel * max(1.0, float(np.abs(reference).max()))
    error = float(np.abs(actual.astype(np.float64) - reference).max())
    assert error <= bound, f"{name}: max abs error {error:.3g} exceeds {bound:.3g}"


def random_params(abstract, seed: int = 0):
    """Random weights for abstract params, like the fixtures' (compiling `init` on CPU is slow)."""
    import jax.numpy as jnp

    rng = np.random.default_rng(seed)

    def draw(path, spec):
        leaf = path[-1].key
        if leaf == "scale":
            value = 1 + 0.2 * rng.standard_normal(spec.shape)
        elif leaf == "bias":
            value = 0.1 * rng.standard_normal(spec.shape)
        else:  # kernel / embedding: unit-variance outputs
            value = rng.standard_normal(spec.shape) / np.sqrt(np.prod(spec.shape[:-1]))
        return jnp.asarray(value, spec.dtype)

    return jax.tree_util.tree_map_with_path(draw, abstract)


def random_pipeline(config, seed: int = 0):
    """A LatentDiffusionPipeline of `config` with random weights in every section."""
    from ldm_jax.models import components
    from ldm_jax import LatentDiffusionPipeline

    variables = {section: {"params": random_params(components.abstract_params(config.model[section]), seed + i)}
                 for i, section in enumerate(("first_stage", "unet", "cond_stage")) if section in config.model}
    return LatentDiffusionPipeline(config, variables)


def tiny_clip_vocab(folder: pathlib.Path, word: str = "cat") -> pathlib.Path:
    """A byte-level BPE vocabulary of 1000 tokens like the fixture CLIP's (BOS 998, EOS 999), in which
    the three-letter `word` is one token (id 513) and everything else falls to single bytes."""
    from ldm_jax.models import tokenizers

    alphabet = tokenizers._byte_level_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet] + [word[:2], word + "</w>"]
    tokens += [f"unused{i}" for i in range(998 - len(tokens))] + [tokenizers.CLIP_BOS, tokenizers.CLIP_EOS]
    folder.mkdir()
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text(f"#version: 0.2\n{word[0]} {word[1]}\n{word[:2]} {word[2]}</w>\n")
    return folder
