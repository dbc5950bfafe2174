"""Config files by path ("path.py:variant"), and the `--config ...` arguments of `ldm-jax train` / `demo`
(ml_collections.config_flags), including every launch command the documentation shows."""
import ast
import pathlib
import re
import shlex

import ml_collections
import pytest

from ldm_jax import cli, config_files
from ldm_jax.convert import compvis
from tests.conftest import REPO

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


def _config():
    return ml_collections.ConfigDict({"seed": 0, "train": {"num_steps": 5, "lr": 1.0, "flip": False, "name": "a",
                                                          "size": (1, 2), "mult": [1, 2]}})


def test_overrides_are_parsed_by_config_flags_with_the_field_s_type():
    config = config_files.apply_overrides(_config(), [
        "--config.seed=3", "--config.train.num_steps", "7", "--config.train.lr=2", "--config.train.flip",
        "--config.train.name", "12", "--config.train.size=(3, 4, 5)", "--config.train.mult", "[4, 8]"])
    assert config.to_dict() == {"seed": 3, "train": {"num_steps": 7, "lr": 2.0, "flip": True, "name": "12",
                                                     "size": (3, 4, 5), "mult": [4, 8]}}
    assert isinstance(config.train.lr, float)
    assert config_files.apply_overrides(config, ["--config.train.flip=false"]).train.flip is False


@pytest.mark.parametrize("arg, message", [
    ("--config.train.num_step=3", "--config.train.num_step: no such field; did you mean config.train.num_steps?"),
    ("--config.trian.lr=3", "--config.trian: no such field; did you mean config.train?"),
    ("--config.seed.x=3", "--config.seed.x: no such field"),
    ("--config.train.num_steps=many", "flag --config.train.num_steps=many: .* \\(expected int\\)"),
    ("--config.train.flip=maybe", "flag --config.train.flip=maybe: .* \\(expected bool\\)"),
    ("--config.train.mult=3", "flag --config.train.mult=3: .* \\(expected list\\)"),
])
def test_a_bad_override_names_the_closest_field_or_the_type(arg, message):
    with pytest.raises(ValueError, match=f"^{message}"):
        config_files.apply_overrides(_config(), [arg])


@pytest.fixture
def launched(monkeypatch):
    """What `ldm-jax train` / `ldm-jax demo` hand to the training loop / the demo, run from the repository."""
    from ldm_jax.demo import run
    from ldm_jax.training import loop

    calls = []

    def train_and_evaluate(config, workdir, progress):
        calls.append((config, workdir, progress))
        return {"step": 0}

    def run_demo(config, out, progress):
        calls.append((config, out, progress))

    monkeypatch.chdir(REPO)
    monkeypatch.setattr(loop, "train_and_evaluate", train_and_evaluate)
    monkeypatch.setattr(run, "run_demo", run_demo)
    return calls


@pytest.mark.parametrize("config_args", [["--config", "configs/builtin_shapes.py:ldm_tiny"],
                                         ["--config=configs/builtin_shapes.py:ldm_tiny"]])
def test_train_hands_the_config_with_its_overrides_to_the_loop(config_args, launched):
    assert cli.main(["train", *config_args, "--workdir", "w", "--config.train.num_steps=7", "--no-progress",
                     "--config.optimizer.learning_rate", "1e-3"]) == 0
    (config, workdir, progress), = launched
    assert (config.train.num_steps, config.optimizer.learning_rate, workdir, progress) == (7, 1e-3, "w", False)
    assert config.model.to_dict() == config_files.load_config("configs/builtin_shapes.py:ldm_tiny").model.to_dict()


def test_demo_overrides_apply_to_its_default_config(launched):
    assert cli.main(["demo", "--out", "o", "--data-dir", "images", "--config.ldm.train.num_steps=3"]) == 0
    (config, out, _), = launched
    assert (config.ldm.train.num_steps, config.data.data_dir, out) == (3, "images", "o")


@pytest.mark.parametrize("arg, message", [
    ("--config.train.num_step=3", "--config.train.num_step: no such field; did you mean config.train.num_steps?"),
    ("--config.train.num_steps=many", "flag --config.train.num_steps=many: invalid literal for int() with base "
                                      "10: 'many' (expected int)"),
])
def test_a_bad_override_ends_in_one_line(arg, message, launched, capsys):
    assert cli.main(["train", "--config", "configs/builtin_shapes.py:ldm_tiny", "--workdir", "w", arg]) == 1
    assert capsys.readouterr().err == f"ldm-jax train: error: {message} (--debug for the traceback)\n"
    assert not launched


def _texts(path: pathlib.Path) -> list[str]:
    """The text of a Markdown file, or the string constants (docstrings, examples) of a Python file."""
    if path.suffix != ".py":
        return [path.read_text()]
    return [node.value for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def _launch_commands(text: str):
    """The arguments of each `ldm-jax train|demo ...` command in `text`, as a shell would split them."""
    lines = re.sub(r"\\\n\s*", " ", text).splitlines()
    for before, line in zip(["", *lines], lines):
        if LAUNCH.search(line):
            try:
                words = shlex.split(line, comments=True)
            except ValueError:  # inside a quoted string opened on the line before (ssh --command="...")
                words = shlex.split(f"{before}\n{line}", comments=True)
            yield from _commands(words)


def _commands(words: list[str]):
    for i, word in enumerate(words):
        if (word == "ldm-jax" or word.endswith("/ldm-jax")) and words[i + 1:i + 2] in (["train"], ["demo"]):
            end = next((j for j in range(i + 1, len(words)) if words[j] in ("&&", ";", "|")), len(words))
            yield words[i + 1:end]
        elif " " in word and LAUNCH.search(word):  # a command quoted inside another (ssh, bash -c)
            yield from _commands(shlex.split(word))


LAUNCH = re.compile(r"ldm-jax (train|demo) ")
DOCUMENTED = [(f"{path.relative_to(REPO)}:{n}", argv)
              for path in [REPO / "README.md", *sorted(REPO.glob("configs/*.py")), *sorted(REPO.glob("ldm_jax/**/*.py"))]
              for n, argv in enumerate(argv for text in _texts(path) for argv in _launch_commands(text))]


def test_the_documentation_holds_launch_commands():
    documented = {where.split(":")[0] for where, _ in DOCUMENTED}
    assert {"README.md", "configs/kl_f4.py", "configs/sd_v2.py", "ldm_jax/cli/train.py"} <= documented
    # README's TPU pod command, quoted inside ssh --command="...", in the Flax examples' --config=path form.
    assert any("--config=configs/cin256_ldm_vq4.py" in argv and '--config.mesh.shape={"data": -1, "fsdp": 8}' in argv
               for _, argv in DOCUMENTED)


@pytest.mark.parametrize("argv", [argv for _, argv in DOCUMENTED], ids=[where for where, _ in DOCUMENTED])
def test_every_documented_launch_command_parses(argv, launched):
    assert cli.main(argv) == 0 and len(launched) == 1
