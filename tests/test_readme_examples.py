"""Every ```python block of README.md runs, as written, on tiny checkpoints made here.

The blocks run in order. A block that uses a name the previous one defines continues it (same
namespace, e.g. the lower-level API after "Sample"); any other starts fresh. Released files, Hub
references and data folders are swapped for local stand-ins through SUBSTITUTIONS, and the names a
block uses without defining them come from PREDEFINED. A path or a free name that neither table
covers fails the test: a new README example must be added here.
"""
import ast
import builtins
import pathlib
import re

import jax
import numpy as np
import pytest
from PIL import Image

from ldm_jax import config_files
from ldm_jax.convert import checkpoint_files, compvis
from tests.conftest import REPO, random_pipeline, tiny_clip_vocab

README = REPO / "README.md"

# README text -> its stand-in, formatted with the files of `_stand_ins` (applied in this order).
SUBSTITUTIONS = {
    '"hf://CompVis/stable-diffusion-v-1-4-original/sd-v1-4.ckpt"': "{checkpoint!r}",
    '"sd-v1-4.ckpt"': "{checkpoint!r}",
    # Our config files have no tiny SD v1; the tiny checkpoint's own YAML stands in for both.
    '"configs/sd_v1.py"': "{config!r}",
    '"v1-inference.yaml"': "{config!r}",
    '"clip-vit-large-patch14/"': "{tokenizer!r}",
    '"clip-vocab/"': "{tokenizer!r}",
    '"grid.png"': "{grid!r}",
    '"/data/ffhq", 256, 64': "{images!r}, 16, 4",
    # Few steps: the examples show the released models' 50.
    "guidance_scale=7.5, batch_size=4)": "guidance_scale=7.5, batch_size=4, num_steps=2)",  # Quick start: default 50
    "num_steps=50": "num_steps=2",
    "steps=50": "steps=2",
}

# The tiny text-to-image model: 32x32 images, latents 4x4x4, a CLIP text encoder of width 32 over 16 tokens.
LATENT, CONTEXT, TOKENS, BATCH = (4, 4, 4), 32, 16, 2
_rng = np.random.default_rng(0)
_features = lambda n, d: _rng.standard_normal((n, d)).astype(np.float32)  # noqa: E731
_covariance = lambda d: np.cov(_features(4 * d, d), rowvar=False)         # noqa: E731

# Names the blocks use without defining them -> their value, given the files of `_stand_ins`.
PREDEFINED = {
    "jax": lambda files: jax,
    # Convert: one model's tensors and its inputs.
    "state_dict": lambda files: checkpoint_files.read_state_dict(files["checkpoint"]),
    "latents_nhwc": lambda files: _features(BATCH, int(np.prod(LATENT))).reshape(BATCH, *LATENT),
    "timesteps": lambda files: np.array([10, 500], np.int32),
    "text_embeddings": lambda files: _features(BATCH * TOKENS, CONTEXT).reshape(BATCH, TOKENS, CONTEXT),
    # The lower-level API.
    "token_ids": lambda files: _rng.integers(0, 998, (BATCH, TOKENS)).astype(np.int32),
    "x_T": lambda files: _features(BATCH, int(np.prod(LATENT))).reshape(BATCH, *LATENT),
    "cond": lambda files: _features(BATCH * TOKENS, CONTEXT).reshape(BATCH, TOKENS, CONTEXT),
    "uncond": lambda files: _features(BATCH * TOKENS, CONTEXT).reshape(BATCH, TOKENS, CONTEXT),
    # Evaluate: statistics, logits and features of the right kinds.
    "mu1": lambda files: _features(1, 8)[0],
    "sigma1": lambda files: _covariance(8),
    "mu2": lambda files: _features(1, 8)[0],
    "sigma2": lambda files: _covariance(8),
    "logits": lambda files: _features(40, 10),
    "real_features": lambda files: _features(32, 8),
    "fake_features": lambda files: _features(32, 8),
}

# A string literal that looks like a file, a folder or a reference (has a slash or an extension).
_PATH_LIKE = re.compile(r"[/\\]|\.[A-Za-z]\w{0,5}$")


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def _bound(tree) -> set[str]:
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {alias.asname or alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
    return names


def _loaded(tree) -> set[str]:
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}


def plan() -> list[tuple[str, bool, set[str]]]:
    """(block, continues the previous block, names to predefine) for each README python block."""
    steps, previous = [], set()
    for block in python_blocks():
        tree = ast.parse(block)
        free = _loaded(tree) - _bound(tree) - set(dir(builtins))
        continues = bool(free & previous)
        available = previous if continues else set()
        steps.append((block, continues, free - available))
        previous = (available | _bound(tree))
    return steps


def path_literals(block: str) -> set[str]:
    return {node.value for node in ast.walk(ast.parse(block))
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and _PATH_LIKE.search(node.value)}


def test_the_tables_cover_every_readme_example():
    blocks = python_blocks()
    assert len(blocks) >= 5, f"found only {len(blocks)} python blocks in {README}"
    text = "\n".join(blocks)
    for path in set().union(*map(path_literals, blocks)):
        assert any(f'"{path}"' in key for key in SUBSTITUTIONS), (
            f"README path {path!r} has no stand-in: add it to SUBSTITUTIONS in {__file__}")
    needed = set().union(*(names for _, _, names in plan()))
    assert not needed - set(PREDEFINED), (
        f"README examples use {sorted(needed - set(PREDEFINED))} without defining them: add to PREDEFINED")
    assert not set(PREDEFINED) - needed, f"PREDEFINED names no README example uses: {sorted(set(PREDEFINED) - needed)}"
    stale = [key for key in SUBSTITUTIONS if key not in text]
    assert not stale, f"SUBSTITUTIONS the README no longer contains: {stale}"


def _tiny_text_to_image(folder: pathlib.Path) -> pathlib.Path:
    """Random weights of an SD-v1-like model (KL-f8, UNet with cross-attention, CLIP text encoder) at tiny
    width, saved with its YAML beside it: the tiny txt2img config with CLIP in place of its BERT."""
    config = config_files.load_config(f"{REPO / 'configs' / 'txt2img_f8_bert'}.py:tiny")
    config.model.cond_stage = {"kind": "clip_text", "params": {
        "model_type": "clip_text_model", "hidden_size": CONTEXT, "intermediate_size": 64, "num_hidden_layers": 1,
        "num_attention_heads": 2, "max_position_embeddings": TOKENS, "vocab_size": 1000, "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5, "bos_token_id": 998, "eos_token_id": 999, "pad_token_id": 999}}
    config.model.diffusion.cond_stage_trainable = False
    path = folder / "sd-tiny.safetensors"
    compvis.save_checkpoint(path, config, random_pipeline(config, seed=0).variables)
    return path


def _image_folder(folder: pathlib.Path, count: int = 6) -> pathlib.Path:
    folder.mkdir()
    for i in range(count):
        Image.fromarray(_rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    return folder


def _stand_ins(tmp_path: pathlib.Path) -> dict:
    checkpoint = _tiny_text_to_image(tmp_path)
    return {"checkpoint": str(checkpoint), "config": str(checkpoint.with_suffix(".yaml")),
            "tokenizer": str(tiny_clip_vocab(tmp_path / "clip-vocab", "fox")) + "/",
            "grid": str(tmp_path / "grid.png"), "images": str(_image_folder(tmp_path / "ffhq"))}


def _substituted(block: str, files: dict) -> str:
    for text, stand_in in SUBSTITUTIONS.items():
        block = block.replace(text, stand_in.format(**files))
    return block


@pytest.mark.slow
def test_readme_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)                 # the README's relative paths are the repository's
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    files = _stand_ins(tmp_path)
    namespace = {}
    for i, (block, continues, names) in enumerate(plan()):
        if not continues:
            namespace = {"__name__": f"readme_block_{i}"}
        namespace.update({name: PREDEFINED[name](files) for name in names})
        exec(compile(_substituted(block, files), f"README.md python block {i}", "exec"), namespace)
        if "grid.png" in block:
            grid = pathlib.Path(files["grid"])
            assert Image.open(grid).size == (2 * 32, 2 * 32)    # 4 samples of 32x32 in 2 rows
            grid.unlink()
