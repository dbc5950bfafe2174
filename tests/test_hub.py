"""hf:// references resolved offline from a pre-filled Hugging Face cache."""
import shutil

import pytest

from ldm_jax import hub

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _prefill(cache, repo_id, files):
    """The huggingface_hub cache layout: blobs/, snapshots/<commit>/<path>, refs/main -> commit."""
    root = cache / f"models--{repo_id.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(COMMIT)
    for name, source in files.items():
        target = root / "snapshots" / COMMIT / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


def test_parse():
    ref = hub.parse("hf://org/repo@v2/sub/model.ckpt")
    assert (ref.repo_id, ref.filename, ref.revision) == ("org/repo", "sub/model.ckpt", "v2")
    with pytest.raises(ValueError, match="hf://org/repo/path/file"):
        hub.parse("hf://org/model.ckpt")
    assert hub.resolve("local/file.ckpt").name == "file.ckpt"


def test_resolves_checkpoint_and_yaml_offline(tmp_path, monkeypatch, compvis_fixtures):
    pytest.importorskip("huggingface_hub")
    cache = tmp_path / "cache"
    _prefill(cache, "tiny/ldm", {"weights/full_ckpt.safetensors": compvis_fixtures / "full_ckpt.safetensors",
                                 "weights/full_ckpt.yaml": compvis_fixtures / "full_ckpt.yaml",
                                 "weights/clip_text_config.json": compvis_fixtures / "clip_text_config.json"})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ckpt, config = hub.resolve_checkpoint("hf://tiny/ldm/weights/full_ckpt.safetensors", cache_dir=cache)
    assert ckpt.read_bytes() == (compvis_fixtures / "full_ckpt.safetensors").read_bytes()
    assert config.name == "full_ckpt.yaml"
    from ldm_jax.convert import compvis
    loaded, variables = compvis.load_checkpoint(ckpt, config)
    assert set(variables) == {"first_stage", "unet", "cond_stage"}


def test_missing_yaml_gives_none_and_missing_file_fails_offline(tmp_path, monkeypatch, compvis_fixtures):
    pytest.importorskip("huggingface_hub")
    cache = tmp_path / "cache"
    _prefill(cache, "tiny/ldm", {"model.ckpt": compvis_fixtures / "ae_vq.ckpt"})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ckpt, config = hub.resolve_checkpoint("hf://tiny/ldm/model.ckpt", cache_dir=cache)
    assert ckpt.is_file() and config is None
    with pytest.raises(Exception):
        hub.resolve("hf://tiny/ldm/absent.ckpt", cache_dir=cache)


def test_clear_error_without_huggingface_hub(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_hub(name, *args, **kwargs):
        if name.startswith("huggingface_hub"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_hub)
    with pytest.raises(ImportError, match="huggingface_hub"):
        hub.resolve("hf://org/repo/model.ckpt")
