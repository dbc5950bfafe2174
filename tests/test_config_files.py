import pytest

from ldm_jax import config_files
from ldm_jax.convert import compvis

CONFIG = '''"""A config whose get_config(arg) reads the fixture YAML."""
from ldm_jax.convert import reference_config


def get_config(arg=None):
    config = reference_config.read_reference_yaml({yaml!r})
    if arg:
        config.model.diffusion.scale_factor = float(arg)
    return config
'''


@pytest.fixture
def config_file(compvis_fixtures, tmp_path):
    path = tmp_path / "tiny_sd.py"
    path.write_text(CONFIG.format(yaml=str(compvis_fixtures / "full_ckpt.yaml")))
    return path


def test_variant_argument_after_colon(config_file):
    assert config_files.load_config(config_file).model.diffusion.scale_factor == pytest.approx(0.18215)
    assert config_files.load_config(f"{config_file}:0.5").model.diffusion.scale_factor == 0.5


def test_checkpoint_loads_with_a_python_config_or_a_config_dict(config_file, compvis_fixtures):
    checkpoint = compvis_fixtures / "full_ckpt.safetensors"
    config, variables = compvis.load_checkpoint(checkpoint, f"{config_file}:0.25")
    assert config.model.diffusion.scale_factor == 0.25 and set(variables) == {"first_stage", "unet", "cond_stage"}
    again, _ = compvis.load_checkpoint(checkpoint, config)
    assert again.model.to_dict() == config.model.to_dict() and again is not config


def test_bad_config_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.py"):
        config_files.load_config(tmp_path / "missing.py")
    (tmp_path / "empty.py").write_text("x = 1\n")
    with pytest.raises(ValueError, match="no get_config"):
        config_files.load_config(tmp_path / "empty.py")
