"""CLIP weights for the CLIP score: a released checkpoint -> our image and text towers.

Two layouts are read (an optional `module.` prefix, as open_clip's training checkpoints have, dropped):
- open_clip's (`open_clip_pytorch_model.bin` / `open_clip_model.safetensors` of
  laion/CLIP-ViT-H-14-laion2B-s32B-b79K): `visual.*` holds the image tower under
  `clip_vision.CLIPVisionTransformer`'s names, the rest is the text tower under
  `open_clip_text.OpenCLIPTextModel`'s; `logit_scale` is ignored.
- transformers' (`model.safetensors` / `pytorch_model.bin` of openai/clip-vit-large-patch14, a
  CLIPModel; a CLIPVisionModelWithProjection holds the image half only), renamed into open_clip's:

    vision_model.embeddings.patch_embedding.weight     -> visual.conv1.weight
    vision_model.embeddings.class_embedding            -> visual.class_embedding
    vision_model.embeddings.position_embedding.weight  -> visual.positional_embedding
    vision_model.pre_layrnorm / .post_layernorm        -> visual.ln_pre / visual.ln_post
    vision_model.encoder.layers.<i>.*                  -> visual.transformer.resblocks.<i>.*, where
        layer_norm1 / layer_norm2                      -> ln_1 / ln_2
        self_attn.{q,k,v}_proj.{weight,bias}           -> attn.in_proj_{weight,bias} (q, k, v stacked)
        self_attn.out_proj / mlp.fc1 / mlp.fc2         -> attn.out_proj / mlp.c_fc / mlp.c_proj
    visual_projection.weight (embed, width)            -> visual.proj (width, embed), transposed
    text_model.embeddings.token_embedding              -> token_embedding
    text_model.embeddings.position_embedding.weight    -> positional_embedding
    text_model.encoder.layers.<i>.*                    -> transformer.resblocks.<i>.* (as above)
    text_model.final_layer_norm                        -> ln_final
    text_projection.weight                             -> text_projection, transposed

The sizes come from the tensors' shapes; the attention heads and the activation do not. They come from
the config beside the weights (transformers' config.json: num_attention_heads, hidden_act; open_clip's
open_clip_config.json: head_width, heads, quick_gelu), else: heads = width / 64 (80 for a 1280-wide
image tower, ViT-H-14's), quick_gelu for transformers' layout (OpenAI's weights and transformers'
default), GELU for open_clip's (its default; the LAION weights). `overrides` set them explicitly.
"""
import dataclasses
import json
import os
import pathlib
import re
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from ldm_jax.convert import checkpoint_files, state_dict as state_dicts
from ldm_jax.models import clip_vision, open_clip_text
from ldm_jax.models.abstract import abstract_module_params

OPEN_CLIP, TRANSFORMERS = "open_clip", "transformers"
_MARKERS = {"visual.conv1.weight": OPEN_CLIP, "vision_model.embeddings.patch_embedding.weight": TRANSFORMERS}
# Buffers and training scalars with no parameter here.
_IGNORED = ("logit_scale", "text_model.embeddings.position_ids", "vision_model.embeddings.position_ids")

_RENAMES = {
    "vision_model.embeddings.patch_embedding": "visual.conv1",
    "vision_model.embeddings.class_embedding": "visual.class_embedding",
    "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
    "vision_model.pre_layrnorm": "visual.ln_pre",
    "vision_model.post_layernorm": "visual.ln_post",
    "text_model.embeddings.token_embedding": "token_embedding",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.final_layer_norm": "ln_final",
}
_ENCODERS = {"vision_model.encoder.layers.": "visual.transformer.resblocks.",
             "text_model.encoder.layers.": "transformer.resblocks."}
_BLOCK_RENAMES = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "self_attn.out_proj": "attn.out_proj",
                  "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
_PROJECTIONS = {"visual_projection.weight": "visual.proj", "text_projection.weight": "text_projection"}
# An image tower this wide is ViT-H-14's, whose heads are 80 wide; the others' are 64.
_HEAD_WIDTHS = {1280: 80}


class _Computed(Mapping):
    """Tensors computed from another state dict when looked up (a lazily read file stays unread)."""

    def __init__(self, thunks: Mapping[str, Callable[[], np.ndarray]]):
        self._thunks = dict(thunks)

    def __getitem__(self, key: str) -> np.ndarray:
        return self._thunks[key]()

    def __iter__(self) -> Iterator[str]:
        return iter(self._thunks)

    def __len__(self) -> int:
        return len(self._thunks)


def layout_of(state_dict: Mapping[str, Any]) -> str:
    """"open_clip" or "transformers", from the key of the patch embedding."""
    for marker, layout in _MARKERS.items():
        if marker in state_dict:
            return layout
    raise state_dicts.CheckpointMismatchError(
        f"not a CLIP checkpoint: neither {' nor '.join(_MARKERS)} is among its {len(state_dict)} keys "
        "(expected open_clip's state dict or transformers' CLIPModel / CLIPVisionModelWithProjection)")


def _renamed(key: str) -> str:
    for old, new in _RENAMES.items():
        if key == old or key.startswith(old + "."):
            return new + key[len(old):]
    return key   # unknown: load_params names it as unexpected


def from_transformers(state_dict: Mapping[str, Any]) -> Mapping[str, np.ndarray]:
    """transformers' CLIP keys -> open_clip's (the module docstring's table), computed when looked up."""
    thunks = {}
    for key in state_dict:
        if key in _IGNORED:
            continue
        if key in _PROJECTIONS:
            thunks[_PROJECTIONS[key]] = lambda key=key: np.asarray(state_dict[key]).T
            continue
        old = next((prefix for prefix in _ENCODERS if key.startswith(prefix)), None)
        if old is None:
            thunks[_renamed(key)] = lambda key=key: state_dict[key]
            continue
        index, name = key[len(old):].split(".", 1)
        block = f"{_ENCODERS[old]}{index}."
        fused = re.fullmatch(r"self_attn\.[qkv]_proj\.(weight|bias)", name)
        if fused:
            parts = [f"{old}{index}.self_attn.{p}_proj.{fused[1]}" for p in "qkv"]
            thunks[f"{block}attn.in_proj_{fused[1]}"] = lambda parts=parts: np.concatenate(
                [np.asarray(state_dict[part]) for part in parts])
            continue
        prefix = next((p for p in _BLOCK_RENAMES if name.startswith(p + ".")), None)
        new = _BLOCK_RENAMES[prefix] + name[len(prefix):] if prefix else name
        thunks[block + new] = lambda key=key: state_dict[key]
    return _Computed(thunks)


def _blocks(state_dict: Mapping, prefix: str) -> int:
    found = {int(m[1]) for key in state_dict if (m := re.match(re.escape(prefix) + r"(\d+)\.", key))}
    return len(found)


def vision_module(state_dict: Mapping, heads: int | None = None, quick_gelu: bool = True,
                  **module_kwargs) -> clip_vision.CLIPVisionTransformer:
    """The image tower that fits an open_clip-layout `visual.*` state dict (prefix dropped)."""
    width, _, patch, _ = np.shape(state_dict["conv1.weight"])
    grid = int(round((np.shape(state_dict["positional_embedding"])[0] - 1) ** 0.5))
    hidden = np.shape(state_dict["transformer.resblocks.0.mlp.c_fc.weight"])[0]
    return clip_vision.CLIPVisionTransformer(
        image_size=grid * patch, patch_size=patch, width=width, layers=_blocks(state_dict, "transformer.resblocks."),
        heads=heads or width // _HEAD_WIDTHS.get(width, 64), embed_dim=np.shape(state_dict["proj"])[1],
        mlp_ratio=hidden / width, quick_gelu=quick_gelu, **module_kwargs)


def text_module(state_dict: Mapping, heads: int | None = None, quick_gelu: bool = True,
                **module_kwargs) -> open_clip_text.OpenCLIPTextModel:
    """The text tower that fits an open_clip-layout text state dict (all but `visual.*`)."""
    vocab_size, width = np.shape(state_dict["token_embedding.weight"])
    hidden = np.shape(state_dict["transformer.resblocks.0.mlp.c_fc.weight"])[0]
    return open_clip_text.OpenCLIPTextModel(
        width=width, layers=_blocks(state_dict, "transformer.resblocks."), heads=heads or width // 64,
        context_length=np.shape(state_dict["positional_embedding"])[0], vocab_size=vocab_size,
        embed_dim=np.shape(state_dict["text_projection"])[1], mlp_ratio=hidden / width, quick_gelu=quick_gelu,
        **module_kwargs)


@dataclasses.dataclass
class CLIPTowers:
    """The two CLIP encoders with their parameters; `text` is None for an image-only checkpoint."""
    layout: str
    vision: clip_vision.CLIPVisionTransformer
    vision_params: dict
    text: open_clip_text.OpenCLIPTextModel | None = None
    text_params: dict | None = None

    def describe(self) -> dict:
        """What results.json records of the model: layout and sizes."""
        fields = ("image_size", "patch_size", "width", "layers", "heads", "embed_dim", "quick_gelu")
        out = {"layout": self.layout, "vision": {name: getattr(self.vision, name) for name in fields}}
        if self.text is not None:
            out["text"] = {name: getattr(self.text, name) for name in ("width", "layers", "heads", "context_length",
                                                                       "vocab_size", "embed_dim", "quick_gelu")}
        return out


def towers_from_state_dict(state_dict: Mapping[str, Any], overrides: Mapping[str, Mapping] | None = None,
                           source: str = "CLIP state dict") -> CLIPTowers:
    """Both towers from either layout. `overrides`: {"vision": {...}, "text": {...}} of `heads` and
    `quick_gelu` (default: see the module docstring), and module fields such as `dtype`."""
    keys = list(state_dict)
    if keys and all(key.startswith("module.") for key in keys):
        state_dict = state_dicts.KeyView(state_dict, {key[len("module."):]: key for key in keys})
    layout = layout_of(state_dict)
    if layout == TRANSFORMERS:
        state_dict = from_transformers(state_dict)
    overrides = overrides or {}
    defaults = {"quick_gelu": layout == TRANSFORMERS}
    visual = state_dicts.KeyView(state_dict, {key[len("visual."):]: key for key in state_dict
                                              if key.startswith("visual.")})
    rest = {key: key for key in state_dict if not key.startswith("visual.")}
    vision = vision_module(visual, **{**defaults, **overrides.get("vision", {})})
    towers = CLIPTowers(layout, vision, _load(vision, clip_vision.example_inputs(vision), visual, (),
                                              f"{source} (image tower)"))
    if "token_embedding.weight" in rest:
        text_state = state_dicts.KeyView(state_dict, rest)
        towers.text = text_module(text_state, **{**defaults, **overrides.get("text", {})})
        towers.text_params = _load(towers.text, open_clip_text.example_inputs(towers.text), text_state,
                                   [key for key in _IGNORED if key in rest], f"{source} (text tower)")
    return towers


def _load(module, example_inputs, state_dict, ignored, source) -> dict:
    params_like = abstract_module_params(module, *example_inputs)
    return state_dicts.load_params(params_like, state_dict, ignored=ignored, source=source)


def config_overrides(folder: str | os.PathLike) -> dict[str, dict]:
    """Heads and activations from a config file in `folder`: transformers' config.json (a CLIPConfig or
    a CLIPVisionConfig) or open_clip's open_clip_config.json; {} when there is neither. A key the file
    leaves out takes its library's default, as that library would."""
    folder = pathlib.Path(folder)
    if (folder / "open_clip_config.json").is_file():
        config = json.loads((folder / "open_clip_config.json").read_text())
        model = config.get("model_cfg", config)
        vision, text = model.get("vision_cfg", {}), model.get("text_cfg", {})
        quick_gelu = bool(model.get("quick_gelu", False))
        return {"vision": {"heads": vision.get("width", 768) // vision.get("head_width", 64), "quick_gelu": quick_gelu},
                "text": {"heads": text.get("heads", 8), "quick_gelu": quick_gelu}}
    if (folder / "config.json").is_file():
        config = json.loads((folder / "config.json").read_text())
        # Files written by early transformers versions may hold only the non-default keys, as *_config_dict.
        towers = {name: config.get(f"{name}_config") or config.get(f"{name}_config_dict")
                  for name in ("vision", "text")}
        if config.get("model_type") == "clip_vision_model":
            towers = {"vision": config}
        defaults = {"vision": 12, "text": 8}   # transformers' CLIPVisionConfig / CLIPTextConfig
        return {name: {"heads": tower.get("num_attention_heads", defaults[name]),
                       "quick_gelu": tower.get("hidden_act", "quick_gelu") == "quick_gelu"}
                for name, tower in towers.items() if tower is not None}
    return {}


def load_clip(path: str | os.PathLike, overrides: Mapping[str, Mapping] | None = None) -> CLIPTowers:
    """Both towers from a .safetensors / .bin / .pt CLIP checkpoint, with the config beside it if any;
    `overrides` win over that config."""
    path = pathlib.Path(path).expanduser()
    merged = config_overrides(path.parent)
    for name, values in (overrides or {}).items():
        merged[name] = {**merged.get(name, {}), **values}
    return towers_from_state_dict(checkpoint_files.read_state_dict(path), merged, source=f"CLIP weights {path}")
