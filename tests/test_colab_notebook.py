"""experiments/colab_sampling.ipynb runs headless end to end on tiny random checkpoints of its four tasks.

The notebook stays as users see it: the test inserts, papermill-style, a cell after the one tagged
"parameters" that points every parameter at files made here, and executes the copy in a fresh
kernel of this interpreter, with the repository as working directory.
"""
import ast
import base64
import io
import os
import pathlib
import sys

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient
from PIL import Image

from ldm_jax import config_files
from ldm_jax.convert import compvis
from ldm_jax.data.synthetic import SyntheticShapes, caption_words
from tests.conftest import REPO, random_pipeline

NOTEBOOK = REPO / "experiments" / "colab_sampling.ipynb"
PARAMETERS_TAG = "parameters"
# The test overrides: 2 steps and 2 samples; the tiny models sample 32x32 (text) and 16x16 images.
STEPS, BATCH_SIZE = 2, 2
# Each task's section, found by the checkpoint it loads, and the grid it must display (width, height).
SECTIONS = {
    "text-to-image": ("from_checkpoint(CHECKPOINT,", (2 * 32, 32)),                      # 2 samples
    "inpainting": ("from_checkpoint(INPAINTING_CHECKPOINT,", (4 * 16, 16)),             # image, mask, 2 samples
    "super-resolution": ("from_checkpoint(SUPER_RESOLUTION_CHECKPOINT,", (2 * 16, 16)),  # bicubic, sample
    "class-conditional": ("from_checkpoint(CLASS_CHECKPOINT,", (2 * 16, 16)),           # 2 labels
}
# Printed by a probe cell appended after the notebook's own cells.
PROBE_PREFIX = "kernel python: "


def _read_notebook():
    return nbformat.read(NOTEBOOK, as_version=4)


def _parameters_cell(nb):
    tagged = [i for i, cell in enumerate(nb.cells) if PARAMETERS_TAG in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, f"expected one cell tagged {PARAMETERS_TAG!r}, found {len(tagged)}"
    return tagged[0]


def _assigned_names(source: str) -> set[str]:
    return {target.id for node in ast.parse(source).body if isinstance(node, ast.Assign)
            for target in node.targets if isinstance(target, ast.Name)}


def _tiny_checkpoint(folder: pathlib.Path, config_name: str, seed: int) -> str:
    """Random weights for the `:tiny` variant of configs/<config_name>.py, saved with its YAML beside them."""
    config = config_files.load_config(f"{REPO / 'configs' / config_name}.py:tiny")
    path = folder / f"{config_name}.safetensors"
    compvis.save_checkpoint(path, config, random_pipeline(config, seed).variables)
    return str(path)


def _bert_vocab(folder: pathlib.Path) -> str:
    """A WordPiece vocab.txt of the built-in captions' words, the special tokens at bert-base-uncased's ids
    ([PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102). (tests/test_training_configs.py has the same helper, but
    importing that module loads every config at import time.)"""
    tokens = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(tokens + list(caption_words())) + "\n")
    return str(folder)


def _overrides(folder: pathlib.Path) -> dict:
    picture = folder / "picture.png"
    Image.fromarray(SyntheticShapes(1, image_size=48, seed=3)[0]["image"]).save(picture)
    return {
        "CHECKPOINT": _tiny_checkpoint(folder, "txt2img_f8_bert", 0), "CONFIG": None,
        "TOKENIZER": _bert_vocab(folder / "vocab"), "PROMPT": "a red circle",
        "INPAINTING_CHECKPOINT": _tiny_checkpoint(folder, "inpainting_big", 10), "INPAINTING_CONFIG": None,
        "IMAGE": str(picture), "MASK": None,
        "SUPER_RESOLUTION_CHECKPOINT": _tiny_checkpoint(folder, "bsr_sr", 20), "SUPER_RESOLUTION_CONFIG": None,
        "CLASS_CHECKPOINT": _tiny_checkpoint(folder, "cin256_ldm_vq4", 30), "CLASS_CONFIG": None,
        "CLASS_LABELS": [0, 5],
        "STEPS": STEPS, "SEED": 1, "BATCH_SIZE": BATCH_SIZE,
    }


def _kernel_environment() -> dict:
    """This process's environment for the kernel, with one CPU device (as a Colab CPU runtime), the test
    suite's cheap XLA optimisation level and compilation cache, and no network for the Hub."""
    env = dict(os.environ)
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_backend_optimization_level=0", HF_HUB_OFFLINE="1",
               JAX_COMPILATION_CACHE_DIR=str(REPO / ".cache" / "jax_compilation"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5")
    return env


def _displayed_images(cell) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(output["data"]["image/png"]))) for output in cell.outputs
            if output.output_type in ("display_data", "execute_result") and "image/png" in output.get("data", {})]


def _shows_progress(cell) -> bool:
    """tqdm.auto's bar: text on stderr, or a widget where ipywidgets is installed."""
    return any((output.output_type == "stream" and output.name == "stderr" and "sampling" in output.text)
               or "application/vnd.jupyter.widget-view+json" in output.get("data", {}) for output in cell.outputs)


def test_notebook_is_saved_clean():
    nb = _read_notebook()
    nbformat.validate(nb)
    assert nb.nbformat == 4
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"saved with outputs: {cell.source[:60]!r}"


@pytest.mark.slow
def test_notebook_runs_every_task_on_tiny_checkpoints(tmp_path):
    nb = _read_notebook()
    parameters = _parameters_cell(nb)
    overrides = _overrides(tmp_path)
    missing = set(overrides) - _assigned_names(nb.cells[parameters].source)
    assert not missing, f"the parameters cell no longer defines {sorted(missing)}"
    injected = "\n".join(f"{name} = {value!r}" for name, value in overrides.items())
    nb.cells.insert(parameters + 1, nbformat.v4.new_code_cell(injected, metadata={"tags": ["injected-parameters"]}))
    nb.cells.append(nbformat.v4.new_code_cell(f"import sys\nprint({PROBE_PREFIX!r} + sys.executable)"))

    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO)}})
    client.execute(env=_kernel_environment())   # raises CellExecutionError naming the failing cell

    errors = [output for cell in nb.cells if cell.cell_type == "code" for output in cell.outputs
              if output.output_type == "error"]
    assert not errors
    assert all(cell.execution_count for cell in nb.cells if cell.cell_type == "code")
    assert nb.cells[-1].outputs[0].text.strip() == PROBE_PREFIX + sys.executable   # this venv's interpreter
    for task, (marker, grid_size) in SECTIONS.items():
        cells = [cell for cell in nb.cells if cell.cell_type == "code" and marker in cell.source]
        assert len(cells) == 1, f"{task}: expected one cell containing {marker!r}, found {len(cells)}"
        images = _displayed_images(cells[0])
        assert len(images) == 1, f"{task}: expected one displayed image/png, got {len(images)}"
        assert images[0].size == grid_size, f"{task}: grid of {images[0].size}, expected {grid_size}"
        assert np.asarray(images[0]).std() > 0, f"{task}: a blank grid"
        assert _shows_progress(cells[0]), f"{task}: no progress bar"
