"""`hf://org/repo[@revision]/path/file.ckpt` references, resolved through the Hugging Face Hub cache.

    from ldm_jax import hub
    ckpt, yaml = hub.resolve_checkpoint("hf://runwayml/stable-diffusion-inpainting/sd-v1-5-inpainting.ckpt")

`huggingface_hub` is optional: a plain path passes through untouched, and an `hf://` reference
without the package fails with an error that names it. With `HF_HUB_OFFLINE=1` (read at call time)
only the local cache is consulted, so a pre-filled cache works without network.
"""
import dataclasses
import os
import pathlib

SCHEME = "hf://"
CONFIG_SUFFIXES = (".yaml",)


@dataclasses.dataclass(frozen=True)
class HubReference:
    repo_id: str
    filename: str
    revision: str | None = None


def is_hub_reference(path) -> bool:
    return isinstance(path, str) and path.startswith(SCHEME)


def parse(reference: str) -> HubReference:
    """`hf://org/repo[@revision]/path/in/repo` -> HubReference."""
    if not is_hub_reference(reference):
        raise ValueError(f"{reference!r} is not a Hugging Face reference (hf://org/repo/path/file)")
    parts = reference[len(SCHEME):].split("/")
    if len(parts) < 3 or not all(parts):
        raise ValueError(f"{reference!r}: expected hf://org/repo/path/file (a repository and a file in it)")
    org, repo, path = parts[0], parts[1], "/".join(parts[2:])
    revision = None
    if "@" in repo:
        repo, revision = repo.split("@", 1)
    return HubReference(f"{org}/{repo}", path, revision)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _download(ref: HubReference, cache_dir=None) -> pathlib.Path:
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as error:
        raise ImportError(f"resolving hf://{ref.repo_id}/{ref.filename} needs the `huggingface_hub` package: "
                          "pip install huggingface_hub (or download the file and pass its path)") from error
    return pathlib.Path(hf_hub_download(ref.repo_id, ref.filename, revision=ref.revision, cache_dir=cache_dir,
                                        local_files_only=_offline()))


def resolve(path, cache_dir=None) -> pathlib.Path:
    """A local path for `path`: an `hf://` reference is downloaded into (or found in) the Hub cache."""
    if not is_hub_reference(path):
        return pathlib.Path(path)
    return _download(parse(path), cache_dir)


def _missing_errors() -> tuple[type[BaseException], ...]:
    """The errors huggingface_hub raises for a file that is not in the repo / not in the offline cache."""
    from huggingface_hub import errors
    return tuple(getattr(errors, name) for name in ("EntryNotFoundError", "LocalEntryNotFoundError",
                                                     "RemoteEntryNotFoundError") if hasattr(errors, name))


def resolve_checkpoint(checkpoint, config=None, cache_dir=None) -> tuple[pathlib.Path, object]:
    """(local checkpoint path, config) for a checkpoint that may be an `hf://` reference.

    `config` passes through unless it is itself an `hf://` reference (then it is resolved too). With no
    config and an `hf://` checkpoint, the YAML beside it in the repository (same name, `.yaml`) is
    fetched when it exists; otherwise config stays None (the loader then looks beside the local file).
    """
    local = resolve(checkpoint, cache_dir)
    if is_hub_reference(config):
        return local, resolve(config, cache_dir)
    if config is not None or not is_hub_reference(checkpoint):
        return local, config
    ref = parse(checkpoint)
    stem = ref.filename.rsplit(".", 1)[0]
    for suffix in CONFIG_SUFFIXES:
        try:
            return local, _download(dataclasses.replace(ref, filename=stem + suffix), cache_dir)
        except _missing_errors():
            continue
    return local, None
