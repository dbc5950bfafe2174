"""Tab. 8: the autoencoder zoo (trained on OpenImages), reconstructions of ImageNet-Val.

Our rows are those without a citation; VQGAN and DALL-E are not ours. Nine of our sixteen are released
(configs/kl_f*.py, vq_f*.py); the other seven are the paper's numbers only. `ldm-jax evaluate` on an
autoencoder checkpoint reconstructs the first --num-samples images of --data and reports R-FID
(reconstructions against their originals), PSNR, SSIM and LPIPS, each mean ± std over the images.
A toy row (the KL-f4 autoencoder of the built-in shapes) runs end to end on a CPU with `--run-toy`.

  python experiments/paper_tables.py --tables 8
  python experiments/paper_tables.py --tables 8 --run-toy --work /tmp/tables
"""
import pathlib
import runpy
import types

rows = types.SimpleNamespace(**runpy.run_path(str(pathlib.Path(__file__).with_name("rows.py"))))

TABLE = "table8"
TITLE = "Tab. 8: autoencoder zoo, reconstructions of ImageNet-Val"
COLUMNS = ("R-FID", "R-IS", "PSNR", "PSIM", "SSIM", "LPIPS")
_OURS = {"R-FID": ["r_fid"], "PSNR": ["psnr"], "SSIM": ["ssim"], "LPIPS": ["lpips"]}
_COLUMN_NOTES = ("R-IS: `ldm-jax evaluate` does not compute the Inception Score of reconstructions (n/a). PSIM: the "
                 "paper does not define it (its values, up to 2.58, are not LPIPS distances), so ours is n/a; LPIPS "
                 "(VGG, lpips v0.1) is ours alone, not in the paper.")
_PAPER_ONLY = "No released checkpoint and no config: the paper's numbers only."


def _paper(r_fid, r_is, psnr, psim, ssim):
    return {"R-FID": r_fid, "R-IS": r_is, "PSNR": psnr, "PSIM": psim, "SSIM": ssim, "LPIPS": ""}


def _released(name, label, config, paper):
    return rows.row(
        TABLE, name, label, paper=_paper(*paper), ours=_OURS, model=rows.released_model(config),
        evaluation=rows.inception_evaluation(
            num_samples=50_000, data="/data/imagenet/val", image_size=256, metrics=["r_fid", "psnr", "ssim", "lpips"],
            lpips_vgg16_weights=rows.VGG16_WEIGHTS, lpips_linear_weights=rows.LPIPS_LINEAR_WEIGHTS),
        reference="/data/imagenet/val: the 50,000 ImageNet (ILSVRC2012) validation images; evaluate resizes the "
                  "smaller side to 256 and centre-crops.",
        notes=f"Resolution: the paper is silent; 256x256, the autoencoders' training size (the model zoo: 'rFID vs "
              f"val'). {_COLUMN_NOTES}")


def _unreleased(name, label, paper, notes=""):
    return rows.row(TABLE, name, label, paper=_paper(*paper), ours={}, model=rows.no_model(),
                    notes=f"{notes} {_PAPER_ONLY}".strip())


def vq_f32_z16384():
    return _unreleased("vq_f32_z16384", "f=32, VQ, |Z|=16384, c=16",
                       ("31.83", "40.40 ± 1.07", "17.45 ± 2.90", "2.58 ± 0.48", "0.41 ± 0.18"))


def vq_f16():
    return _released("vq_f16", "f=16, VQ, |Z|=16384, c=8", "configs/vq_f16.py",
                     ("5.15", "144.55 ± 3.74", "20.83 ± 3.61", "1.73 ± 0.43", "0.54 ± 0.18"))


def vq_f8():
    return _released("vq_f8", "f=8, VQ, |Z|=16384, c=4", "configs/vq_f8.py",
                     ("1.14", "201.92 ± 3.97", "23.07 ± 3.99", "1.17 ± 0.36", "0.65 ± 0.16"))


def vq_f8_n256():
    return _released("vq_f8_n256", "f=8, VQ, |Z|=256, c=4", "configs/vq_f8.py:n256",
                     ("1.49", "194.20 ± 3.87", "22.35 ± 3.81", "1.26 ± 0.37", "0.62 ± 0.16"))


def vq_f4():
    return _released("vq_f4", "f=4, VQ, |Z|=8192, c=3", "configs/vq_f4.py",
                     ("0.58", "224.78 ± 5.35", "27.43 ± 4.26", "0.53 ± 0.21", "0.82 ± 0.10"))


def vq_f4_noattn():
    return _released("vq_f4_noattn", "f=4†, VQ, |Z|=8192, c=3 (no attention)", "configs/vq_f4.py:noattn",
                     ("1.06", "221.94 ± 4.58", "25.21 ± 4.17", "0.72 ± 0.26", "0.76 ± 0.12"))


def vq_f4_z256():
    return _unreleased("vq_f4_z256", "f=4, VQ, |Z|=256, c=3",
                       ("0.47", "223.81 ± 4.58", "26.43 ± 4.22", "0.62 ± 0.24", "0.80 ± 0.11"))


def vq_f2_z2048():
    return _unreleased("vq_f2_z2048", "f=2, VQ, |Z|=2048, c=2",
                       ("0.16", "232.75 ± 5.09", "30.85 ± 4.12", "0.27 ± 0.12", "0.91 ± 0.05"))


def vq_f2_z64():
    return _unreleased("vq_f2_z64", "f=2, VQ, |Z|=64, c=2",
                       ("0.40", "226.62 ± 4.83", "29.13 ± 3.46", "0.38 ± 0.13", "0.90 ± 0.05"))


def kl_f32():
    return _released("kl_f32", "f=32, KL, c=64", "configs/kl_f32.py",
                     ("2.04", "189.53 ± 3.68", "22.27 ± 3.93", "1.41 ± 0.40", "0.61 ± 0.17"))


def kl_f32_c16():
    return _unreleased("kl_f32_c16", "f=32, KL, c=16",
                       ("7.3", "132.75 ± 2.71", "20.38 ± 3.56", "1.88 ± 0.45", "0.53 ± 0.18"))


def kl_f16():
    return _released("kl_f16", "f=16, KL, c=16", "configs/kl_f16.py",
                     ("0.87", "210.31 ± 3.97", "24.08 ± 4.22", "1.07 ± 0.36", "0.68 ± 0.15"))


def kl_f16_c8():
    return _unreleased("kl_f16_c8", "f=16, KL, c=8",
                       ("2.63", "178.68 ± 4.08", "21.94 ± 3.92", "1.49 ± 0.42", "0.59 ± 0.17"))


def kl_f8():
    return _released("kl_f8", "f=8, KL, c=4", "configs/kl_f8.py",
                     ("0.90", "209.90 ± 4.92", "24.19 ± 4.19", "1.02 ± 0.35", "0.69 ± 0.15"))


def kl_f4():
    return _released("kl_f4", "f=4, KL, c=3", "configs/kl_f4.py",
                     ("0.27", "227.57 ± 4.89", "27.53 ± 4.54", "0.55 ± 0.24", "0.82 ± 0.11"))


def kl_f2():
    return _unreleased("kl_f2", "f=2, KL, c=2",
                       ("0.086", "232.66 ± 5.16", "32.47 ± 4.19", "0.20 ± 0.09", "0.93 ± 0.04"))


def toy_kl_f4():
    return rows.row(
        TABLE, "toy_kl_f4", "toy: f=4, KL, c=3, built-in shapes 16x16", paper=_paper("", "", "", "", ""),
        ours={"R-FID": ["r_fid"], "PSNR": ["psnr"], "SSIM": ["ssim"]}, model=rows.toy_model("autoencoder"),
        evaluation=rows.toy_evaluation(sampled=False, metrics=["r_fid", "psnr", "ssim"]),
        reference="builtin: the built-in shapes' validation split (generated, nothing to download).",
        notes=f"LPIPS needs VGG-16 weights the CPU run does not have. {rows.TOY_NOTE}")


ROWS = {"vq_f32_z16384": vq_f32_z16384, "vq_f16": vq_f16, "vq_f8": vq_f8, "vq_f8_n256": vq_f8_n256, "vq_f4": vq_f4,
        "vq_f4_noattn": vq_f4_noattn, "vq_f4_z256": vq_f4_z256, "vq_f2_z2048": vq_f2_z2048, "vq_f2_z64": vq_f2_z64,
        "kl_f32": kl_f32, "kl_f32_c16": kl_f32_c16, "kl_f16": kl_f16, "kl_f16_c8": kl_f16_c8, "kl_f8": kl_f8,
        "kl_f4": kl_f4, "kl_f2": kl_f2, "toy_kl_f4": toy_kl_f4}


def get_config(row: str = "kl_f8"):
    """The row `row` of Tab. 8 (see ROWS)."""
    return rows.select(ROWS, row, TABLE)
