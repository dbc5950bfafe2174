"""The Inception Score (Salimans et al. 2016): exp E_x KL(p(y|x) || p(y)), averaged over splits.

Computed as torch-fidelity 0.4.0 does (the package the paper used): float64 softmax of the
logits, the samples shuffled by `np.random.RandomState(2020).permutation` (its default
`samples_shuffle=True, rng_seed=2020`), split i = samples [i*N//splits, (i+1)*N//splits), the
score of a split exp(mean_x sum_y p log(p / mean p)), and the mean and population std over splits.
`shuffle_seed=None` keeps the given order, as the original TensorFlow code and ADM's evaluator do.

The logits are the FID Inception's `logits_unbiased` (pool3 @ fc.weight^T, no bias), which is
what torch-fidelity and the original TensorFlow code feed the softmax.
"""
import numpy as np
from scipy import special

# torch-fidelity's default `rng_seed`, used to shuffle the samples before splitting.
TORCH_FIDELITY_SEED = 2020


def inception_score(logits, splits: int = 10, shuffle_seed: int | None = TORCH_FIDELITY_SEED) -> tuple[float, float]:
    """(mean, std) over `splits` of the Inception Score of logits (N, classes).

    Raises ValueError when there are fewer samples than splits or the logits are not finite.
    """
    logits = np.asarray(logits, np.float64)
    if logits.ndim != 2:
        raise ValueError(f"logits must be (N, classes), got shape {logits.shape}")
    count = logits.shape[0]
    if splits < 1 or count < splits:
        raise ValueError(f"the Inception Score over {splits} splits needs at least {splits} samples, got {count}")
    if not np.isfinite(logits).all():
        raise ValueError("logits hold NaN or infinite values")
    if shuffle_seed is not None:
        # The legacy generator reproduces torch-fidelity's permutation, hence its split membership.
        logits = logits[np.random.RandomState(shuffle_seed).permutation(count)]
    log_p = special.log_softmax(logits, axis=1)
    p = np.exp(log_p)
    scores = []
    for i in range(splits):
        part = slice(i * count // splits, (i + 1) * count // splits)
        log_marginal = np.log(p[part].mean(axis=0, keepdims=True))
        kl = np.sum(p[part] * (log_p[part] - log_marginal), axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))
