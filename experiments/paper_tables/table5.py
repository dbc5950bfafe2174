"""Tab. 5: 4x super-resolution on ImageNet-Val 64^2 -> 256^2 (LDM-SR).

Our three rows; Image Regression and SR3 are not ours. None has a released checkpoint (the released
LDM-BSR, configs/bsr_sr.py, is trained on OpenImages with another degradation). The first row's model
is configs/bsr_sr.py trained with the ImageNet bicubic overrides of its docstring (E.3.4, SR3's
pipeline); the "big" (552M) and "guiding" (image-based perceptual guider, D.6) rows have no config.
`ldm-jax evaluate` upscales each validation image from its bicubic 64x64 downsampling and scores the
upscalings (FID, IS, and PSNR / SSIM against their originals); the second run scores the same
samples again against the training split (FID ‡).

  python experiments/paper_tables.py --tables 5
"""
import pathlib
import runpy
import types

rows = types.SimpleNamespace(**runpy.run_path(str(pathlib.Path(__file__).with_name("rows.py"))))

TABLE = "table5"
TITLE = "Tab. 5: x4 upscaling, ImageNet-Val 256x256"
COLUMNS = ("FID", "IS", "PSNR", "SSIM")
_OURS = {"FID": ["fid", "train_split:fid"], "IS": ["is"], "PSNR": ["psnr"], "SSIM": ["ssim"]}
_PAPER_ONLY = "Neither a released checkpoint nor a config exists for this row: the paper's numbers only."
_SR_NOTES = ("FID: † against features of the validation images, ‡ of the training split (a second run on the "
             "first run's samples). PSNR / SSIM: each upscaling against its original, mean ± std over the images.")
# Where the main run writes its samples: `paper_tables.py` prints its --out as <results>/table5_ldm4_100,
# with <results> = "results" unless --results names another folder.
_MAIN_SAMPLES = "results/table5_ldm4_100/samples"


def ldm4_100():
    return rows.row(
        TABLE, "ldm4_100", "LDM-4 (ours, 100 steps)",
        paper={"FID": "2.8† / 4.8‡", "IS": "166.3", "PSNR": "24.4 ± 3.8", "SSIM": "0.69 ± 0.14"}, ours=_OURS,
        model=rows.config_only_model("configs/bsr_sr.py"),
        # 100 DDIM steps as printed; one upscaling per validation image (all of --data).
        evaluation=rows.inception_evaluation(sampler="ddim", steps=100, eta=1.0, data="/data/imagenet/val_sr",
                                             metrics=["fid", "is", "psnr", "ssim"]),
        runs={"train_split": {"samples": _MAIN_SAMPLES, "data": "/data/imagenet/train_sr", "num_reference": 1_281_167,
                              "metrics": ["fid"]}},
        reference="/ckpt/table5_ldm4_100/model.safetensors: the model trained with `ldm-jax train --config "
                  "configs/bsr_sr.py` and the docstring's ImageNet overrides (no released checkpoint), exported "
                  "as a checkpoint. /data/imagenet/val_sr: the ImageNet validation images whose shorter side is at "
                  "least 256 px (E.3.4), centre-cropped to 256: each is a target, its bicubic (anti-aliased) 64x64 "
                  "downsampling the model's input; /data/imagenet/train_sr: the same filter over the training split "
                  f"(--num-reference must equal its count: ImageNet's 1,281,167 minus the images removed). "
                  f"{_MAIN_SAMPLES}: the samples/ folder of the first run's --out (run it first; "
                  f"results/ stands for the folder given to paper_tables.py --results).",
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
