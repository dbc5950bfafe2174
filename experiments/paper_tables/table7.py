"""Tab. 7: inpainting on 30k 512^2 crops of Places test images (LaMa's protocol, E.2.2).

Our four rows; LaMa, CoModGAN, RegionWise, DeepFill v2 and EdgeConnect are not ours. One big
inpainting model is released (configs/inpainting_big.py, `inpainting_big/last.ckpt`); the paper does
not say whether it is the fine-tuned one: it is attached to "big, w/ ft", the model of Fig. 11 / 22
(object removal). The 215M "w/ attn" / "w/o attn" models of Tab. 6 have no release and no config.
`ldm-jax evaluate` cannot draw inpainting samples itself (each needs its image and mask), so the
command scores a folder of inpainted test crops produced beforehand, in two runs: all 30k crops,
and the hard ones (40-50% of the crop masked).

  python experiments/paper_tables.py --tables 7
"""
import pathlib
import runpy
import types

rows = types.SimpleNamespace(**runpy.run_path(str(pathlib.Path(__file__).with_name("rows.py"))))

TABLE = "table7"
TITLE = "Tab. 7: inpainting, Places 512x512 crops"
COLUMNS = ("FID (40-50% masked)", "LPIPS (40-50% masked)", "FID (all)", "LPIPS (all)")
_PAPER_ONLY = "Neither a released checkpoint nor a config exists for this row: the paper's numbers only."


def _paper(*values):
    return dict(zip(COLUMNS, values))


def big_ft():
    results = "/data/results/table7_big_ft"
    return rows.row(
        TABLE, "big_ft", "LDM-4 (ours, big, w/ ft)", paper=_paper("9.39", "0.246 ± 0.042", "1.50", "0.137 ± 0.080"),
        ours={"FID (all)": ["fid"], "FID (40-50% masked)": ["hard:fid"]},
        model=rows.released_model("configs/inpainting_big.py"),
        # How the samples are drawn (recorded; the commands score them).
        evaluation=rows.inception_evaluation(sampler="ddim", steps=50, eta=0.0, data="/data/places/test_512",
                                             metrics=["fid"]),
        samples=f"{results}/inpainted",
        runs={"hard": {"samples": f"{results}/inpainted_40-50", "data": "/data/places/test_512_40-50"}},
        reference=f"/data/places/test_512: the 30,000 512x512 Places test crops of LaMa's protocol; "
                  f"/data/places/test_512_40-50: those of them with 40-50% of the crop masked. {results}/inpainted "
                  f"(and inpainted_40-50): one inpainting per crop, same file order, drawn with the released "
                  f"inpainting_big/last.ckpt at 512x512 from the crop and its LaMa mask, 50 DDIM steps, eta 0.",
        notes="Sampler: the paper is silent; 50 DDIM steps, eta 0, the defaults of the repository's "
              "scripts/inpaint.py. Which big model the release is (w/ or w/o the 512^2 fine-tuning) is not stated. "
              "LPIPS between each inpainting and its original: `ldm-jax evaluate` computes LPIPS for autoencoder "
              "reconstructions only, so it stays n/a.")


def big_noft():
    return rows.row(TABLE, "big_noft", "LDM-4 (ours, big, w/o ft)",
                    paper=_paper("12.89", "0.257 ± 0.047", "2.40", "0.142 ± 0.085"), ours={}, model=rows.no_model(),
                    notes=f"The big model before its 512^2 fine-tuning: not released separately. {_PAPER_ONLY}")


def with_attention():
    return rows.row(TABLE, "with_attention", "LDM-4 (ours, w/ attn)",
                    paper=_paper("11.87", "0.257 ± 0.042", "2.15", "0.144 ± 0.084"), ours={}, model=rows.no_model(),
                    notes=f"The 215M model on the VQ-f4 first stage with attention (Tab. 6, 15). {_PAPER_ONLY}")


def without_attention():
    return rows.row(TABLE, "without_attention", "LDM-4 (ours, w/o attn)",
                    paper=_paper("12.60", "0.259 ± 0.041", "2.37", "0.145 ± 0.084"), ours={}, model=rows.no_model(),
                    notes=f"The 215M model on the attention-free VQ-f4 first stage (Tab. 6, 15). {_PAPER_ONLY}")


ROWS = {"big_ft": big_ft, "big_noft": big_noft, "with_attention": with_attention,
        "without_attention": without_attention}


def get_config(row: str = "big_ft"):
    """The row `row` of Tab. 7 (see ROWS)."""
    return rows.select(ROWS, row, TABLE)
