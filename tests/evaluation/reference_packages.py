"""The parity references: the real pytorch-fid 0.3.0 and torch-fidelity 0.4.0 code, without torchvision.

Both packages import torchvision at the top of their packages, and PyPI's torchvision (a CUDA build)
does not import beside the CPU torch 2.13.0 pinned here. The code the tests compare against imports
only torch, so it is loaded from the installed packages (`pip install --no-deps pytorch-fid==0.3.0
torch-fidelity==0.4.0`) with the torchvision-bound modules stood in for while it loads:

- torch-fidelity: its package `__init__` (which registers every feature extractor) is skipped, and
  `torch_fidelity.utils` (dataset and cache helpers) is a stub whose names raise when called; the
  Inception feature extractor, the TF1 resize and the metric functions used are the package's own.
- pytorch-fid: `torchvision` is a stub whose Inception blocks are torch-fidelity's (the same
  constructors as torchvision's `InceptionA` / `InceptionC` / `InceptionE` / `Inception3`: the
  FID weight file loads into them strictly), so `pytorch_fid.inception.InceptionV3` runs its own
  resize, normalisation and FIDInception* forwards; its weight download is replaced by a given
  state dict. `fid_score.calculate_frechet_distance` is the package's own numpy/scipy code.

- open_clip (`pip install --no-deps open-clip-torch==3.3.0`, for the CLIP towers): its package
  `__init__` is skipped and `torchvision.ops.misc` (imported by `open_clip.utils` for a BatchNorm
  helper the ViTs never use) is a stub; `open_clip.transformer` is the package's own.

When a package is not installed the tests that need it are skipped.
"""
import contextlib
import functools
import importlib
import importlib.util
import sys
import types

import pytest

torch = pytest.importorskip("torch")


def _require(package: str, install: str = "pytorch-fid==0.3.0 torch-fidelity==0.4.0"):
    spec = importlib.util.find_spec(package)
    if spec is None:
        pytest.skip(f"{package} is not installed (pip install --no-deps {install})")
    return spec


def _unavailable(name: str):
    def fail(*args, **kwargs):
        raise RuntimeError(f"{name} needs torchvision, which these parity tests do without")
    return fail


@contextlib.contextmanager
def _stand_ins(modules: dict[str, types.ModuleType], loaded_prefixes: tuple[str, ...]):
    """Puts `modules` in sys.modules while importing, then removes them and what was loaded under them."""
    before = set(sys.modules)
    saved = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name in set(sys.modules) - before:
            if name.startswith(loaded_prefixes):
                del sys.modules[name]
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def _package_shell(name: str, spec=None) -> types.ModuleType:
    """The package `name` as a namespace for its submodules, without running its `__init__`."""
    shell = types.ModuleType(name)
    shell.__path__ = list((spec or _require(name)).submodule_search_locations)
    return shell


@functools.lru_cache(maxsize=None)
def torch_fidelity_modules() -> types.SimpleNamespace:
    """torch-fidelity's `feature_extractor_inceptionv3`, `interpolate_compat_tensorflow`, `metric_*`."""
    utils = types.ModuleType("torch_fidelity.utils")
    utils.__getattr__ = _unavailable
    names = ("feature_extractor_inceptionv3", "interpolate_compat_tensorflow", "metric_fid", "metric_isc",
             "metric_prc")
    with _stand_ins({"torch_fidelity": _package_shell("torch_fidelity"), "torch_fidelity.utils": utils},
                    ("torch_fidelity",)):
        return types.SimpleNamespace(**{name: importlib.import_module(f"torch_fidelity.{name}") for name in names})


class _Inception3(torch.nn.Module):
    """torchvision's `Inception3(num_classes=1008, aux_logits=False)` layout, from torch-fidelity's blocks."""

    def __init__(self, num_classes=1008, **unused):
        super().__init__()
        blocks = torch_fidelity_modules().feature_extractor_inceptionv3
        conv = blocks.BasicConv2d
        self.Conv2d_1a_3x3 = conv(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = conv(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = conv(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = conv(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = conv(80, 192, kernel_size=3)
        self.Mixed_5b = blocks.InceptionA(192, pool_features=32)
        self.Mixed_5c = blocks.InceptionA(256, pool_features=64)
        self.Mixed_5d = blocks.InceptionA(288, pool_features=64)
        self.Mixed_6a = blocks.InceptionB(288)
        self.Mixed_6b = blocks.InceptionC(768, channels_7x7=128)
        self.Mixed_6c = blocks.InceptionC(768, channels_7x7=160)
        self.Mixed_6d = blocks.InceptionC(768, channels_7x7=160)
        self.Mixed_6e = blocks.InceptionC(768, channels_7x7=192)
        self.Mixed_7a = blocks.InceptionD(768)
        self.Mixed_7b = blocks.InceptionE_1(1280)
        self.Mixed_7c = blocks.InceptionE_1(2048)
        self.fc = torch.nn.Linear(2048, num_classes)


def _torchvision_stand_in() -> dict[str, types.ModuleType]:
    blocks = torch_fidelity_modules().feature_extractor_inceptionv3
    torchvision = types.ModuleType("torchvision")
    torchvision.__version__ = "0.28.0"
    models = types.ModuleType("torchvision.models")
    inception = types.ModuleType("torchvision.models.inception")
    inception.InceptionA, inception.InceptionC, inception.InceptionE = (
        blocks.InceptionA, blocks.InceptionC, blocks.InceptionE_1)
    models.inception = inception
    models.inception_v3 = _Inception3
    transforms = types.ModuleType("torchvision.transforms")
    transforms.__getattr__ = _unavailable
    torchvision.models, torchvision.transforms = models, transforms
    return {"torchvision": torchvision, "torchvision.models": models, "torchvision.models.inception": inception,
            "torchvision.transforms": transforms}


@functools.lru_cache(maxsize=None)
def pytorch_fid_modules() -> types.SimpleNamespace:
    """pytorch-fid's `inception` and `fid_score` modules, loaded over the torchvision stand-in."""
    _require("pytorch_fid")
    with _stand_ins(_torchvision_stand_in(), ("pytorch_fid",)):
        inception = importlib.import_module("pytorch_fid.inception")
        fid_score = importlib.import_module("pytorch_fid.fid_score")
    return types.SimpleNamespace(inception=inception, fid_score=fid_score)


def pytorch_fid_inception(state_dict: dict) -> torch.nn.Module:
    """pytorch-fid's `InceptionV3([3])` (pool3 block, resize + normalise on) with these weights."""
    inception = pytorch_fid_modules().inception
    inception.load_state_dict_from_url = lambda url, progress=True: state_dict
    model = inception.InceptionV3([inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
    return model.eval()


@functools.lru_cache(maxsize=None)
def open_clip_transformer() -> types.ModuleType:
    """open_clip's `transformer` module (VisionTransformer, TextTransformer), loaded without torchvision."""
    spec = _require("open_clip", "open-clip-torch==3.3.0")
    misc = types.ModuleType("torchvision.ops.misc")
    misc.FrozenBatchNorm2d = type("FrozenBatchNorm2d", (torch.nn.Module,), {})
    stand_ins = {"torchvision": types.ModuleType("torchvision"), "torchvision.ops": types.ModuleType("torchvision.ops"),
                 "torchvision.ops.misc": misc, "open_clip": _package_shell("open_clip", spec)}
    with _stand_ins(stand_ins, ("open_clip",)):
        return importlib.import_module("open_clip.transformer")
