"""Runs the original PyTorch code from its checkouts: import switching and the run-time stand-ins for
imports that only training, logging or hub downloads need. No file of a checkout is edited.

Used by the generators only (tests never import it: they read the files the generators wrote).
"""
import sys
import types

from torch import nn


def _module(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    sys.modules[name] = module
    return module


class LightningModule(nn.Module):
    """pytorch_lightning is only needed to train; inference needs a module with `.device`."""

    @property
    def device(self):
        return next(self.parameters()).device


def install_stubs():
    """pytorch_lightning, torchvision, kornia, clip and open_clip stand-ins: imported at the top of the
    original modules, never called on the paths the generators run (except LightningModule)."""
    import transformers.models.clip.modeling_clip  # noqa: F401  (before the stubs: it probes torchvision)
    _module("pytorch_lightning", LightningModule=LightningModule)
    _module("pytorch_lightning.utilities")
    _module("pytorch_lightning.utilities.distributed", rank_zero_only=lambda function: function)
    _module("pytorch_lightning.utilities.rank_zero", rank_zero_only=lambda function: function)
    _module("torchvision")
    _module("torchvision.utils", make_grid=None)
    for name in ("kornia", "clip", "open_clip"):
        _module(name)


def use(*checkouts):
    """Makes `import ldm` (and `taming`) resolve to `checkouts`: the three repositories share the name."""
    for name in [m for m in sys.modules if m.split(".")[0] in ("ldm", "taming")]:
        del sys.modules[name]
    sys.path[:] = [str(c) for c in checkouts] + [p for p in sys.path if p not in ORIGINAL_PATHS]
    ORIGINAL_PATHS.update(str(c) for c in checkouts)


ORIGINAL_PATHS: set = set()


def cpu_samplers(*sampler_classes):
    """The DDIM/PLMS samplers' `register_buffer` moves every tensor to CUDA; on CPU it is a plain setattr."""
    for cls in sampler_classes:
        cls.register_buffer = lambda self, name, value: setattr(self, name, value)


def small_clip(encoders_module, text_config):
    """`FrozenCLIPEmbedder` downloads openai/clip-vit-large-patch14; build a small random one instead."""
    from transformers import CLIPTextConfig, CLIPTextModel

    encoders_module.CLIPTokenizer = types.SimpleNamespace(from_pretrained=lambda version: None)
    encoders_module.CLIPTextModel = types.SimpleNamespace(
        from_pretrained=lambda version: CLIPTextModel(CLIPTextConfig(**text_config)))
