"""The training runs of configs/*.py: each validates (but for the paths a user must give, which fail by
their dotted name), states its launch command and the paper's numbers, and each tiny variant trains."""
import pathlib
import re

import jax
import numpy as np
import pytest

from ldm_jax import config_files, zoo
from ldm_jax.data import synthetic
from ldm_jax.data.config import pipeline_from_config
from ldm_jax.training import optimizers
from ldm_jax.training.experiment import (ExperimentConfigError, stage_from_config, validate_experiment_config,
                                         with_training_defaults)

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"
# Experiment configs (demo.py is the demo's: three runs in one, tested by tests/test_demo.py).
CONFIG_NAMES = sorted(path.stem for path in CONFIG_DIR.glob("*.py") if path.stem != "demo")
VARIANTS = [("vq_f4", "noattn"), ("vq_f8", "n256"), ("semantic_synthesis_landscapes", "512"),
            ("sd_v1", "v1-5"), ("sd_v2", "2.1"), ("sd_v2_v", "2.1")]
# One autoencoder and one LDM of each conditioning family.
TINY = ["kl_f4", "celebahq_ldm_vq4", "cin256_ldm_vq4", "txt2img_f8_bert", "bsr_sr", "inpainting_big",
        "semantic_synthesis_landscapes"]
SPECS = CONFIG_NAMES + [f"{name}:{arg}" for name, arg in VARIANTS] + [f"{name}:tiny" for name in TINY]
FULL_SPECS = [spec for spec in SPECS if not spec.endswith(":tiny") and not spec.startswith("builtin_shapes")]

# (global batch, optimizer steps, learning rate after scale_lr) of the paper's runs, Rombach et al. 2022.
PAPER = {
    "celebahq_ldm_vq4": (48, 410_000, 9.6e-5),          # Tab. 12
    "ffhq_ldm_vq4": (42, 635_000, 8.4e-5),              # Tab. 12
    "lsun_bedrooms_ldm_vq4": (48, 1_900_000, 9.6e-5),   # Tab. 12
    "lsun_churches_ldm_kl8": (96, 500_000, 5.0e-5),     # Tab. 12
    "cin256_ldm_vq4": (1200, 178_000, 1.0e-4),          # Tab. 10, 15
    "cin256_ldm_vq8": (64, 2_900_000, 6.4e-5),          # Tab. 10, 13
    "txt2img_f8_bert": (680, 390_000, 1.0e-4),          # Tab. 15
    "layout2img_openimages": (24, 4_400_000, 4.8e-5),   # Tab. 15
    "bsr_sr": (64, 860_000, 6.4e-5),                    # Tab. 15
    "inpainting_big": (128, 360_000, 128 * 1.0e-6),     # Tab. 15 gives the base rate 1e-6
    "semantic_synthesis_landscapes": (48, 360_000, 4.8e-5),  # Tab. 15
}


def load(spec: str):
    name, _, arg = spec.partition(":")
    return config_files.load_config(f"{CONFIG_DIR / name}.py" + (f":{arg}" if arg else ""))


def experiment(spec: str):
    return with_training_defaults(load(spec))


def user_path_fields(data) -> set[str]:
    """The data fields naming the user's files that this data config needs."""
    needed = {"folder": {"data_dir"}, "tfds": {"data_dir"}, "tar": {"shards"}}.get(data.name, set())
    return needed | ({"tokenizer"} if data.task == "caption" else set())


def fill_user_paths(config, root: pathlib.Path) -> None:
    """Points every user path of `config.data` at something that exists under `root`."""
    fields = user_path_fields(config.data)
    if "data_dir" in fields:
        (root / "data").mkdir(exist_ok=True)
        config.data.data_dir = str(root / "data")
    if "shards" in fields:
        (root / "00000.tar").write_bytes(b"")
        config.data.shards = str(root / "00000.tar")
    if "tokenizer" in fields:
        config.data.tokenizer = str(write_bert_vocab(root / "tokenizer"))


def write_bert_vocab(folder: pathlib.Path) -> pathlib.Path:
    """A WordPiece vocab.txt for the built-in captions, the special tokens at bert-base-uncased's ids
    ([PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102), which the LDM's unconditional text assumes."""
    words = set(synthetic.SHAPES) | set(synthetic.PALETTE)
    for template in synthetic.CAPTION_TEMPLATES:
        words |= set(re.findall(r"[a-z]+", re.sub(r"\{\w+\}", "", template)))
    tokens = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(words)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(tokens) + "\n")
    return folder


def named_fields(error: Exception) -> set[str]:
    return set(re.findall(r"(config\.[\w.]+):", str(error)))


# -- every config --------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", SPECS)
def test_states_the_run_essentials(spec):
    config = load(spec)
    assert isinstance(config.seed, int)
    assert config.train.num_steps >= 1 and config.train.global_batch_size >= 1
    assert config.checkpoint.every_steps >= 1


@pytest.mark.parametrize("spec", SPECS)
def test_valid_once_the_user_paths_are_given(spec, tmp_path):
    config = experiment(spec)
    missing = {name for name in user_path_fields(config.data) if not config.data[name]}
    if missing:
        with pytest.raises(ExperimentConfigError) as failure:
            validate_experiment_config(config)
        assert named_fields(failure.value) == {f"config.data.{name}" for name in missing}
    fill_user_paths(config, tmp_path)
    validate_experiment_config(config)


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_docstring_holds_the_train_command(name):
    doc = config_files.load_config_module(CONFIG_DIR / f"{name}.py").__doc__
    assert re.search(rf"ldm-jax train --config configs/{name}\.py[ :]", doc)
    if name in TINY:
        assert f"ldm-jax train --config configs/{name}.py:tiny " in doc


@pytest.mark.parametrize("name", sorted(PAPER))
def test_the_paper_s_batch_steps_and_learning_rate(name):
    config = experiment(name)
    lr = optimizers.resolved_learning_rate(config.optimizer, config.train.global_batch_size)
    assert (config.train.global_batch_size, config.train.num_steps) == PAPER[name][:2]
    assert lr == pytest.approx(PAPER[name][2], rel=1e-9)


@pytest.mark.parametrize("spec", [spec for spec in FULL_SPECS if "unet" not in load(spec).model])
def test_autoencoders_train_as_the_reference_on_openimages(spec):
    config = experiment(spec)
    assert (config.optimizer.name, config.optimizer.b1, config.optimizer.b2) == ("adam", 0.5, 0.9)
    assert config.optimizer.base_learning_rate == 4.5e-6 and config.optimizer.scale_lr
    assert config.data.name == "folder" and config.data.image_size == 256 and config.data.random_crop
    assert "lossconfig" in config.model.first_stage.params


@pytest.mark.parametrize("spec", [spec for spec in FULL_SPECS if "unet" in load(spec).model])
def test_latent_diffusion_runs_start_from_a_trained_first_stage(spec):
    pretrained = experiment(spec).pretrained
    assert pretrained.first_stage or pretrained.model


def test_guided_class_conditional_runs_keep_a_null_class():
    builtin_classes = len(synthetic.SyntheticShapes(1).classes)
    for spec, data_classes in (("cin256_ldm_vq4", 1000), ("cin256_ldm_vq4:tiny", builtin_classes)):
        config = experiment(spec)
        assert config.train.cond_drop_prob > 0
        # The dropped label is n_classes - 1, which must be no class of the data.
        assert config.model.cond_stage.params.n_classes == data_classes + 1
    assert experiment("cin256_ldm_vq8").train.cond_drop_prob == 0  # classifier-guided, no null class


def test_schedules_restate_the_reference_schedulers():
    churches = experiment("lsun_churches_ldm_kl8").optimizer
    schedule = optimizers.make_schedule(churches, 5.0e-5)
    assert float(schedule(0)) == pytest.approx(5.0e-11) and float(schedule(20_000)) == pytest.approx(5.0e-5)
    inpainting = experiment("inpainting_big").optimizer
    schedule = optimizers.make_schedule(inpainting, 1.0)
    assert [float(schedule(n)) for n in (0, 1000, 50_000, 300_000)] == pytest.approx([1e-3, 0.1, 1e-4, 1e-4])


def test_training_helper_adds_sections_and_keeps_the_model():
    release = zoo.released("x.ckpt", "x.yaml", "test")
    autoencoder = zoo.autoencoder(zoo.kl_f8(), release)
    model = autoencoder.model.to_dict()
    autoencoder = zoo.training(autoencoder, steps=5, batch_size=4, base_learning_rate=4.5e-6, data={"name": "builtin"},
                               checkpoint_every=5)
    assert autoencoder.model.to_dict() == model
    assert "cond_drop_prob" not in autoencoder.train and "pretrained" not in autoencoder
    assert optimizers.resolved_learning_rate(autoencoder.optimizer, 4) == pytest.approx(1.8e-5)
    ldm = zoo.training(zoo.latent_diffusion(zoo.vq_f4(with_loss=False), zoo.sd_v1_unet(), release), steps=3,
                       batch_size=2, base_learning_rate=1e-6, data={"name": "builtin"}, cond_drop_prob=0.2,
                       pretrained={"first_stage": "vq.ckpt"}, accumulate=2)
    assert (ldm.train.num_steps, ldm.train.cond_drop_prob, ldm.pretrained.first_stage) == (3, 0.2, "vq.ckpt")
    assert optimizers.resolved_learning_rate(ldm.optimizer, 2) == pytest.approx(4e-6)
    validate_experiment_config(with_training_defaults(ldm))
    with pytest.raises(ValueError, match="exactly one of base_learning_rate"):
        zoo.training(ldm, steps=1, batch_size=1, base_learning_rate=1e-6, learning_rate=1e-4, data={})
    with pytest.raises(ValueError, match="stage 2"):
        zoo.training(autoencoder, steps=1, batch_size=1, learning_rate=1e-4, data={}, cond_drop_prob=0.1)


def test_unknown_variants_are_refused():
    for spec in ("kl_f4:huge", "cin256_ldm_vq4:v3", "semantic_synthesis_landscapes:1024"):
        with pytest.raises(ValueError, match="variant"):
            load(spec)


# -- the tiny variants on the CPU ------------------------------------------------------------------------

def tiny_experiment(name: str, root: pathlib.Path, **train):
    config = experiment(f"{name}:tiny")
    fill_user_paths(config, root)
    config.train.update(train)
    config.checkpoint.async_save = False
    return config


@pytest.mark.parametrize("name", TINY)
def test_tiny_batches_fit_the_model(name, tmp_path):
    """The first batch of each tiny variant traces through its train step (no compilation)."""
    config = tiny_experiment(name, tmp_path)
    pipeline = pipeline_from_config(config.data)
    try:
        batch = {key: value for key, value in next(pipeline).items()
                 if isinstance(value, np.ndarray) and value.dtype != object}
    finally:
        pipeline.close()
    stage = stage_from_config(config)
    rng = jax.random.key(config.seed)
    state = jax.eval_shape(stage.init_state, rng, batch)
    _, metrics = jax.eval_shape(stage.train_step, state, batch, rng)
    assert metrics["loss"].shape == ()


# Whole runs through the loop: stage 1 (KL) and a text LDM through the tokenizing data pipeline in
# tests/test_demo.py, the class-conditional loop in tests/training/test_loop.py; every conditioning
# mode is stepped in tests/training/test_ldm_stage.py.
