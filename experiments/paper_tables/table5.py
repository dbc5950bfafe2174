"""Tab. 5: 4x super-resolution on ImageNet-Val 64^2 -> 256^2 (LDM-SR).

Our three rows; Image Regression and SR3 are not ours. None has a released checkpoint (the released
LDM-BSR, configs/bsr_sr.py, is trained on OpenImages with another degradation). The first row's model
is configs/bsr_sr.py trained with the ImageNet bicubic overrides of its docstring (E.3.4, SR3's
pipeline); the "big" (552M) and "guiding" (image-based perceptual guider, D.6) rows have no config.
`ldm-jax evaluate` cannot draw super-resolution samples itself (each needs its own low-resolution
input), so the row's command scores a folder of upscaled validation images produced beforehand.

  python experiments/paper_tables.py --tables 5
"""
import pathlib
import runpy
import types

rows = types.SimpleNamespace(**runpy.run_path(str(pathlib.Path(__file__).with_name("rows.py"))))

TABLE = "table5"
TITLE = "Tab. 5: x4 upscaling, ImageNet-Val 256x256"
COLUMNS = ("FID", "IS", "PSNR", "SSIM")
_OURS = {"FID": ["fid", "train_split:fid"], "IS": ["is"]}
_PAPER_ONLY = "Neither a released checkpoint nor a config exists for this row: the paper's numbers only."
_SR_NOTES = ("FID: † against features of the validation images, ‡ of the training split (two runs). PSNR / SSIM "
             "compare each upscaled image with its original: `ldm-jax evaluate` computes them for autoencoder "
             "reconstructions only, so they stay n/a.")


def ldm4_100():
    return rows.row(
        TABLE, "ldm4_100", "LDM-4 (ours, 100 steps)",
        paper={"FID": "2.8† / 4.8‡", "IS": "166.3", "PSNR": "24.4 ± 3.8", "SSIM": "0.69 ± 0.14"}, ours=_OURS,
        model=rows.config_only_model("configs/bsr_sr.py"),
        # How the samples are drawn (recorded; the command scores them): 100 DDIM steps as printed.
        evaluation=rows.inception_evaluation(sampler="ddim", steps=100, eta=1.0, data="/data/imagenet/val_sr",
                                             metrics=["fid", "is"]),
        samples="/data/results/table5_ldm4_100/upscaled",
        runs={"train_split": {"data": "/data/imagenet/train_sr", "num_reference": 1_281_167, "metrics": ["fid"]}},
        reference="/data/results/table5_ldm4_100/upscaled: one 256x256 upscaling per image of /data/imagenet/val_sr, "
                  "drawn from its bicubic (anti-aliased) 64x64 downsampling by the model trained with "
                  "`ldm-jax train --config configs/bsr_sr.py` and the docstring's ImageNet overrides (no released "
                  "checkpoint), 100 DDIM steps, eta 1. /data/imagenet/val_sr: the ImageNet validation images whose "
                  "shorter side is at least 256 px (E.3.4), centre-cropped to 256; /data/imagenet/train_sr: the "
                  "same filter over the training split (--num-reference must equal its count: ImageNet's 1,281,167 "
                  "minus the images removed).",
        notes=f"Eta: the paper is silent; 1 as the repository's super-resolution notebook helper samples. {_SR_NOTES}")


def ldm4_big_100():
    return rows.row(
        TABLE, "ldm4_big_100", "LDM-4 (ours, big, 100 steps)",
        paper={"FID": "2.4† / 4.3‡", "IS": "174.9", "PSNR": "24.7 ± 4.1", "SSIM": "0.71 ± 0.15"}, ours={},
        model=rows.no_model(), notes=f"552M parameters; architecture not published. {_PAPER_ONLY}")


def ldm4_50_guiding():
    return rows.row(
        TABLE, "ldm4_50_guiding", "LDM-4 (ours, 50 steps, guiding)",
        paper={"FID": "4.4† / 6.4‡", "IS": "153.7", "PSNR": "25.8 ± 3.7", "SSIM": "0.74 ± 0.12"}, ours={},
        model=rows.no_model(),
        notes=f"The image-based guider of Sec. 4.4 / D.6 (a perceptual loss guiding each step) is not part of "
              f"ldm-jax's samplers. {_PAPER_ONLY}")


ROWS = {"ldm4_100": ldm4_100, "ldm4_big_100": ldm4_big_100, "ldm4_50_guiding": ldm4_50_guiding}


def get_config(row: str = "ldm4_100"):
    """The row `row` of Tab. 5 (see ROWS)."""
    return rows.select(ROWS, row, TABLE)
