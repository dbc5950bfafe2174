"""Evaluation of the paper's tables: FID / R-FID, Inception Score, precision/recall, PSNR / SSIM / LPIPS, CLIP score.

    fid.frechet_distance(mu1, sigma1, mu2, sigma2) -> float
    inception_score(logits, splits=10) -> (mean, std)
    precision_recall(real_features, fake_features, k=3) -> (precision, recall)

The feature networks (the FID Inception-v3 in `ldm_jax.models.inception`, VGG-16 fc2 in
`precision_recall`), the streaming, sharded extraction and the statistics files (`features`) and the
per-image metrics (`image_metrics`) and the CLIP score (`clip_score`, with the CLIP towers of
`ldm_jax.models.clip_vision` / `open_clip_text`) live in their own modules. The two functions above shadow the
modules of the same name as package attributes: import other names from those modules with
`from ... import`, e.g. `from ldm_jax.evaluation.precision_recall import VGG16Fc2`.
"""
from ldm_jax.evaluation import fid
from ldm_jax.evaluation.inception_score import inception_score
from ldm_jax.evaluation.precision_recall import precision_recall

__all__ = ["fid", "inception_score", "precision_recall"]
