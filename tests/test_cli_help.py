"""`ldm-jax --help` and every sub-command's help say what it does, with an example."""
import pytest

from ldm_jax import cli

COMMANDS = [[], ["demo"], ["convert"], ["check"], ["sample"], ["train"], ["evaluate"], ["data"], ["data", "build"],
            ["data", "cache-latents"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "ldm-jax")
def test_help_describes_the_command_with_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "example" in text
    assert f"ldm-jax {' '.join(command)}".strip() in text.split("example", 1)[1]  # the example runs this command
