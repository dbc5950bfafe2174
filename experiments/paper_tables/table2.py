"""Tab. 2: text-to-image synthesis on MS-COCO 256^2 (LDM-KL-8, LDM-KL-8-G; the 1.45B LAION model).

Both rows are the released 1.45B text-to-image model (configs/txt2img_f8_bert.py), with 250 DDIM
steps, without and with classifier-free guidance (s = 1.5); the other methods are not ours.
Protocol (E.3.2, after DALL-E): 30,000 samples, prompted with MS-COCO validation captions, against
30,000 validation images; FID and IS with torch-fidelity.

  python experiments/paper_tables.py --tables 2
"""
import pathlib
import runpy
import types

rows = types.SimpleNamespace(**runpy.run_path(str(pathlib.Path(__file__).with_name("rows.py"))))

TABLE = "table2"
TITLE = "Tab. 2: text-conditional image synthesis, MS-COCO 256x256"
COLUMNS = ("FID", "IS")
_OURS = {"FID": ["fid"], "IS": ["is"]}
_REFERENCE = ("/data/coco/val2014_30k: 30,000 MS-COCO val2014 images, each with one of its captions in "
              "<stem>.txt beside it; the captions prompt the model (sample i gets caption i) and the images are the "
              "FID reference (evaluate centre-crops them to 256x256).")
_NOTES = ("Eta: the paper is silent; 0, the default of the repository's scripts/txt2img.py (Fig. 5's samples, "
          "which are not scored, use eta 1 and s = 10). Which of an image's five captions prompts it is not "
          "stated: the first here. The paper does not say whether both rows are the same weights; the release is "
          "the one 1.45B model (the v2 changelog: the text-to-image model 'now uses classifier-free guidance'), "
          "so both rows are measured on it.")


def _row(name, label, paper, guidance_scale, notes=""):
    return rows.row(
        TABLE, name, label, paper=dict(zip(COLUMNS, paper)), ours=_OURS,
        model=rows.released_model("configs/txt2img_f8_bert.py"),
        evaluation=rows.inception_evaluation(sampler="ddim", steps=250, eta=0.0, guidance_scale=guidance_scale,
                                             num_samples=30_000, data="/data/coco/val2014_30k", num_reference=30_000,
                                             tokenizer=rows.BERT_VOCABULARY, metrics=["fid", "is"]),
        reference=_REFERENCE, notes=f"{notes} {_NOTES}".strip())


def ldm_kl8():
    return _row("ldm_kl8", "LDM-KL-8 (250 DDIM steps)", ("23.31", "20.03 ± 0.33"), 1.0,
                notes="No guidance (scale 1).")


def ldm_kl8_guided():
    return _row("ldm_kl8_guided", "LDM-KL-8-G* (250 DDIM steps, c.f.g. s = 1.5)", ("12.63", "30.29 ± 0.42"), 1.5,
                notes="Classifier-free guidance s = 1.5 as printed; the unconditional prompt is the empty caption.")


ROWS = {"ldm_kl8": ldm_kl8, "ldm_kl8_guided": ldm_kl8_guided}


def get_config(row: str = "ldm_kl8_guided"):
    """The row `row` of Tab. 2 (see ROWS)."""
    return rows.select(ROWS, row, TABLE)
