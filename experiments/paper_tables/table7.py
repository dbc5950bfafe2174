"""Tab. 7: inpainting on 30k 512^2 crops of Places test images (LaMa's protocol, E.2.2).

Our four rows; LaMa, CoModGAN, RegionWise, DeepFill v2 and EdgeConnect are not ours. One big
inpainting model is released (configs/inpainting_big.py, `inpainting_big/last.ckpt`); the paper does
not say whether it is the fine-tuned one: it is attached to "big, w/ ft", the model of Fig. 11 / 22
(object removal). The 215M "w/ attn" / "w/o attn" models of Tab. 6 have no release and no config.
`ldm-jax evaluate` inpaints each test crop under its fixed evaluation mask (ldm_jax/data/masks.py
`evaluation_mask`, by the crop's index) and scores FID against the crops and LPIPS of each
inpainting against its crop, in two runs: masks covering 10-50% of the crop, and 40-50% (the hard
masks).

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
    return rows.row(
        TABLE, "big_ft", "LDM-4 (ours, big, w/ ft)", paper=_paper("9.39", "0.246 ± 0.042", "1.50", "0.137 ± 0.080"),
        ours={"FID (all)": ["fid"], "LPIPS (all)": ["lpips"], "FID (40-50% masked)": ["hard:fid"],
              "LPIPS (40-50% masked)": ["hard:lpips"]},
        model=rows.released_model("configs/inpainting_big.py"),
        # 512x512 crops (the model runs convolutionally beyond its 256^2 training size), all 30k of --data.
        evaluation=rows.inception_evaluation(sampler="ddim", steps=50, eta=0.0, data="/data/places/test_512",
                                             image_size=512, metrics=["fid", "lpips"],
                                             lpips_vgg16_weights=rows.VGG16_WEIGHTS,
                                             lpips_linear_weights=rows.LPIPS_LINEAR_WEIGHTS),
        runs={"hard": {"mask_coverage": [0.4, 0.5]}},
        reference="/data/places/test_512: the 30,000 512x512 Places test crops of LaMa's protocol, read in file "
                  "order; crop i is inpainted under ldm_jax's evaluation mask i (boxes and strokes covering "
                  "10-50% of it; 40-50% in the hard run).",
        notes="Sampler: the paper is silent; 50 DDIM steps, eta 0, the defaults of the repository's "
              "scripts/inpaint.py. Which big model the release is (w/ or w/o the 512^2 fine-tuning) is not stated. "
              "Masks: ours (ldm_jax/data/masks.py, seeded by the crop's index), LaMa-style boxes and strokes in "
              "place of LaMa's mask files; the hard run draws them with 40-50% coverage, as the paper's subset.")


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
