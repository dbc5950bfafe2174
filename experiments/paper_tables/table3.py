"""Tab. 3: class-conditional ImageNet 256^2 (LDM-4 cin256-v2, without and with classifier-free guidance).

Both rows are the released cin256-v2 model (configs/cin256_ldm_vq4.py), 250 DDIM steps (Tab. 10),
guidance scale 1 and 1.5; BigGAN-deep, ADM and ADM-G are not ours. Protocol (E.3.1): 50k samples,
50 per class, against the entire ImageNet training set; FID with torch-fidelity, precision / recall
with ADM's script. Two toy rows (a class-conditional LDM on the built-in shapes, guidance 1 and 3)
run end to end on a CPU with `--run-toy`.

  python experiments/paper_tables.py --tables 3
  python experiments/paper_tables.py --tables 3 --run-toy --work /tmp/tables
"""
import pathlib
import runpy
import types

rows = types.SimpleNamespace(**runpy.run_path(str(pathlib.Path(__file__).with_name("rows.py"))))

TABLE = "table3"
TITLE = "Tab. 3: class-conditional image synthesis, ImageNet 256x256"
COLUMNS = ("FID", "IS", "Precision", "Recall")
_OURS = {"FID": ["fid"], "IS": ["is"], "Precision": ["precision"], "Recall": ["recall"]}
_METRICS = ["fid", "is", "precision_recall"]
_REFERENCE = ("/data/imagenet/train: the ImageNet-1k (ILSVRC2012) training images, 1,281,167, in any folder layout "
              "(evaluate reads every image below it, resizes the smaller side to 256 and centre-crops). A faster "
              "alternative: --reference-stats VIRTUAL_imagenet256_labeled.npz (ADM's reference batch: training-set "
              "statistics, and 10k images for precision / recall) instead of --data / --num-reference.")
_NOTES = ("Eta: the paper is silent (Tab. 3 / 10 give only '250 DDIM steps'); 0 here, as the repository's "
          "notebook scripts/latent_imagenet_diffusion.ipynb samples this model (eta 0.0) and as ADM's DDIM-250 "
          "baselines of the table run (the older LDM-VQ-8 of Tab. 10 used eta 1, per the repository's model zoo). "
          "Classes: sample i has label i % 1000, 50 per class; the null class 1000 is the unconditional input of "
          "guidance.")


def _released(name, label, paper, guidance_scale, notes):
    return rows.row(
        TABLE, name, label, paper=dict(zip(COLUMNS, paper)), ours=_OURS,
        model=rows.released_model("configs/cin256_ldm_vq4.py"),
        evaluation=rows.inception_evaluation(sampler="ddim", steps=250, eta=0.0, guidance_scale=guidance_scale,
                                             num_samples=50_000, data="/data/imagenet/train",
                                             num_reference=1_281_167, metrics=_METRICS),
        reference=_REFERENCE, notes=f"{notes} {_NOTES}")


def ldm4():
    return _released("ldm4", "LDM-4 (ours)", ("10.56", "103.49 ± 1.24", "0.71", "0.62"), 1.0,
                     "No guidance (scale 1), 250 DDIM steps (Tab. 10).")


def ldm4_guided():
    return _released("ldm4_guided", "LDM-4-G (ours), 250 steps, c.f.g. s = 1.5",
                     ("3.60", "247.67 ± 5.59", "0.87", "0.48"), 1.5,
                     "Classifier-free guidance s = 1.5, 250 DDIM steps, as printed.")


def _toy(name, label, guidance_scale):
    return rows.row(
        TABLE, name, label, paper={column: "" for column in COLUMNS}, ours=_OURS, model=rows.toy_model("ldm"),
        evaluation=rows.toy_evaluation(sampled=True, sampler="ddim", eta=0.0, guidance_scale=guidance_scale,
                                       metrics=_METRICS),
        reference="builtin: the built-in shapes' validation split (generated, nothing to download).",
        notes=f"The 12 shape classes, sample i has label i % 12; label 12 is the null class of guidance. "
              f"{rows.TOY_NOTE}")


def toy_ldm():
    return _toy("toy_ldm", "toy: class-conditional LDM, built-in shapes 16x16", 1.0)


def toy_ldm_guided():
    return _toy("toy_ldm_guided", "toy: class-conditional LDM-G, built-in shapes 16x16, c.f.g. s = 3", 3.0)


ROWS = {"ldm4": ldm4, "ldm4_guided": ldm4_guided, "toy_ldm": toy_ldm, "toy_ldm_guided": toy_ldm_guided}


def get_config(row: str = "ldm4_guided"):
    """The row `row` of Tab. 3 (see ROWS)."""
    return rows.select(ROWS, row, TABLE)
