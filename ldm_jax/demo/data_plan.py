"""What the demo trains on and prompts with, decided before any training (`plan_data`).

The model is only ever prompted with the kind of text it was trained on:
- the built-in shapes: captions and class phrases ("a red circle"), as the dataset generates them;
- a folder of class sub-folders without captions: the class names are the captions and the prompts;
- a folder with a `<stem>.txt` / `.json` caption beside every image and no classes: the captions are
  (the prompts are captions of held-out images);
- both: an example's caption is its class name half of the time, so class names and captions both
  work as prompts.
A folder is checked first (`data.folder_check`): unreadable images, too few images per class, or
nothing to condition on stop the demo with a message, not a failure minutes into training.
"""
import dataclasses

import numpy as np

from ldm_jax.data.config import default_data_config
from ldm_jax.data.folder import ImageFolderSource, class_prompt
from ldm_jax.data.folder_check import FolderCheck, check_folder

# Fewer than this many images in a class leave one or two for the held-out split and a handful to learn.
MIN_IMAGES_PER_CLASS = 10
MIN_CAPTIONED_IMAGES = 20
MIXED_CLASS_CAPTIONS = 0.5  # with classes and captions: how often the class name is the caption


@dataclasses.dataclass(frozen=True)
class DataPlan:
    """The demo's prompts and the data settings the stages train with."""
    description: str                 # one line for the report: what the data is and what is used
    class_prompts: list[str]         # one grid row and `samples_per_class` samples each; [] without classes
    caption_prompts: list[str]       # extra prompts drawn for their own grids
    data_settings: dict              # merged into config.data (every stage, and the evaluation)
    check: FolderCheck | None = None


def plan_data(config, *, progress: bool = False) -> DataPlan:
    """The plan of the demo `config`: its built-in data, or its checked folder (ValueError if unusable)."""
    if config.data.name == "builtin":
        backgrounds = config.data.backgrounds or "every"
        return DataPlan(
            description=f"the built-in coloured shapes at {config.data.image_size}x{config.data.image_size} on "
                        f"{backgrounds.replace(',', ', ')} backgrounds, prompted with their class phrases and captions",
            class_prompts=list(config.sampling.class_prompts), caption_prompts=list(config.sampling.caption_prompts),
            data_settings={})
    if config.data.name != "folder":
        raise ValueError(f"the demo trains on the built-in data or an image folder, not {config.data.name!r}")
    check = check_folder(config.data.data_dir, progress=progress)
    _refuse_unusable(check)
    fraction = float(config.data.heldout_fraction)
    if check.has_classes:
        captions = check.all_captioned
        probability = MIXED_CLASS_CAPTIONS if captions else 1.0
        prompts = [class_prompt(name) for name in check.class_counts]
        use = ("class names and captions as prompts (each example's caption is its class name half of the time)"
               if captions else "the class names as prompts" + (
                   f" (captions on only {check.num_captioned} of {check.num_readable} images are not used)"
                   if check.num_captioned else " (no captions)"))
    else:
        probability, prompts, captions = 0.0, [], True
        use = "the captions as prompts (no class folders: no feature net, adherence or FID)"
    caption_prompts = (_heldout_captions(config.data.data_dir, fraction, len(config.sampling.caption_prompts))
                       if captions else [])
    if not prompts:
        prompts, caption_prompts = caption_prompts, []
    return DataPlan(
        description=f"{check.describe()}. Held out: {fraction:.0%} of each class. Using {use}.",
        class_prompts=prompts, caption_prompts=caption_prompts,
        data_settings={"class_caption_probability": probability}, check=check)


def _refuse_unusable(check: FolderCheck) -> None:
    where = f"image folder {check.root!r}"
    allowed = default_data_config().max_bad_fraction
    total = check.num_readable + len(check.unreadable)
    if len(check.unreadable) > allowed * total:
        listed = "\n  ".join(f"{key}: {reason}" for key, reason in list(check.unreadable.items())[:10])
        raise ValueError(f"{len(check.unreadable)} of {total} images in the {where} cannot be read (at most "
                         f"{allowed:.0%} may be); remove or fix them:\n  {listed}")
    if check.has_classes:
        small = {name: count for name, count in check.class_counts.items() if count < MIN_IMAGES_PER_CLASS}
        if small:
            listed = ", ".join(f"{name!r}: {count}" for name, count in small.items())
            raise ValueError(f"the {where} has classes with fewer than {MIN_IMAGES_PER_CLASS} readable images "
                             f"({listed}); the demo holds out some of each class and learns from the rest: add "
                             "images or remove these class folders")
    elif not check.all_captioned:
        raise ValueError(f"the {where} has neither class sub-folders nor a caption beside every image "
                         f"({check.num_captioned} of {check.num_readable} captioned); the demo is text-conditional: "
                         "put the images in one sub-folder per class, or a <stem>.txt caption beside each image")
    elif check.num_readable < MIN_CAPTIONED_IMAGES:
        raise ValueError(f"the {where} holds {check.num_readable} captioned images; the demo needs at least "
                         f"{MIN_CAPTIONED_IMAGES}")


def _heldout_captions(root, fraction: float, count: int) -> list[str]:
    """`count` captions of held-out images, spread over the split (never trained on)."""
    heldout = ImageFolderSource(root, split="validation", heldout_fraction=fraction)
    picks = np.linspace(0, len(heldout) - 1, min(count, len(heldout))).round().astype(int)
    return [heldout[int(index)]["caption"] for index in dict.fromkeys(picks)]
