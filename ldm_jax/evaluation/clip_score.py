"""CLIP score of generated samples against their prompts (`ldm-jax evaluate --metrics clip_score`).

    clip_score(image_embeddings, text_embeddings)   # (N,): 100 * max(cos(image, text), 0)

The definition of torchmetrics' `CLIPScore`, which Stable Diffusion's guidance-scale plots use: each
sample's CLIP image embedding against its prompt's text embedding, the cosine clipped at 0 and scaled
by 100, averaged over the samples (results.json: clip_score and clip_score_std). Sample j's prompt is
prompt j % len(prompts), as `image_sources.diffusion_sampler` draws them.

The CLIP model comes from `clip_weights` (`convert.clip_weights.load_clip`: transformers' CLIPModel,
e.g. openai/clip-vit-large-patch14, or open_clip's, e.g. ViT-H-14 laion2b) and its tokenizer from
`clip_tokenizer` (default: the folder of the weights, where both hub repositories keep vocab.json +
merges.txt): transformers' CLIPTokenizer for the first layout, open_clip.tokenize for the second.
Images stream batch by batch through `clip_vision.preprocess` and the image tower, sharded over the
local devices like the Inception features (`features.sharded_feature_fn`); the prompts of each batch
go through the text tower the same way.

Only samples that have prompts are scored: those of text-to-image models and `samples` with `prompts`.
Class-conditional models have no prompts here (no class names ship with their checkpoints): score
their samples with `samples` = DIR/samples and a `prompts` file of one class name per line in label
order, since sample j has class j % num_classes.
"""
import os
import pathlib
from typing import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from ldm_jax.evaluation import features
from ldm_jax.evaluation.feature_net import as_signed
from ldm_jax.evaluation.settings import EvaluationSettings, Problem, SettingsError
from ldm_jax.models import clip_vision, tokenizers

SCALE = 100.0


def clip_score(image_embeddings, text_embeddings, scale: float = SCALE) -> jax.Array:
    """max(scale * cos(image, text), 0) of each embedding pair (N, D) x (N, D), (N,)."""
    image_embeddings, text_embeddings = jnp.asarray(image_embeddings), jnp.asarray(text_embeddings)
    if image_embeddings.shape != text_embeddings.shape or image_embeddings.ndim != 2:
        raise ValueError(f"CLIP score pairs (N, D) embeddings, got {image_embeddings.shape} and "
                         f"{text_embeddings.shape}")

    def unit(x):
        return x / jnp.linalg.norm(x, axis=-1, keepdims=True)

    cosine = jnp.sum(unit(image_embeddings.astype(jnp.float32)) * unit(text_embeddings.astype(jnp.float32)), -1)
    return jnp.maximum(scale * cosine, 0.0)


def clip_score_problem(settings: EvaluationSettings, kind: str, prompted: bool) -> str | None:
    """Why clip_score cannot be computed for these settings (a `Problem` text), or None."""
    if not settings.clip_weights:
        return ("needs CLIP weights: {clip_weights} (transformers' openai/clip-vit-large-patch14 model.safetensors "
                "or open_clip's ViT-H-14 open_clip_model.safetensors)")
    if prompted:
        return None
    if kind == "samples":
        return "needs each sample's prompt: {prompts} (a file, one per line; sample j has line j % lines)"
    return ("needs each sample's prompt, which only text-to-image models have here; score a class-conditional "
            "model's samples with {samples} DIR/samples and {prompts} holding one class name per line in label "
            "order (sample j has class j % classes)")


def tokenizer_for(towers, path: str | os.PathLike):
    """The tokenizer the CLIP checkpoint was trained with, from its vocabulary files at `path`."""
    if towers.layout == "transformers":
        return tokenizers.clip_tokenizer(path, towers.text.context_length)
    return tokenizers.open_clip_tokenizer(path, towers.text.context_length)


def clip_scorer(towers, tokenizer: Callable, batch_size: int) -> Callable[[np.ndarray, list[str]], np.ndarray]:
    """(images (n <= batch_size, H, W, 3) uint8 or [-1, 1], their n prompts) -> (n,) CLIP scores, each
    tower sharded over the local devices with one compilation per batch size."""
    vision, text = towers.vision, towers.text

    def embed_images(variables, images):
        return {"embedding": vision.apply(variables, clip_vision.preprocess(as_signed(images), vision.image_size))}

    def embed_text(variables, tokens):
        return {"embedding": text.apply(variables, tokens, return_pooled=True)[1]}

    images_fn = features.sharded_feature_fn(embed_images, {"params": towers.vision_params}, batch_size)
    text_fn = features.sharded_feature_fn(embed_text, {"params": towers.text_params}, batch_size)
    score = jax.jit(clip_score)

    def fn(images: np.ndarray, prompts: list[str]) -> np.ndarray:
        if len(prompts) != len(images):
            raise ValueError(f"{len(images)} images and {len(prompts)} prompts")
        return np.asarray(score(images_fn(images)["embedding"], text_fn(tokenizer(prompts))["embedding"]))

    return fn


def clip_metrics(settings: EvaluationSettings, prompts: list[str], batches: Iterable[np.ndarray], num_batches: int,
                 progress: bool) -> tuple[dict[str, float], dict]:
    """Mean and std of the CLIP score of the image batches (in sample order) against their prompts, and the
    CLIP model's description for results.json."""
    from ldm_jax.convert.clip_weights import load_clip

    towers = load_clip(settings.clip_weights)
    if towers.text is None:
        raise SettingsError(Problem("{clip_weights} {path} holds an image tower only (a "
                                    "CLIPVisionModelWithProjection?); the CLIP score needs the text tower too: give a "
                                    "CLIPModel or open_clip checkpoint", {"path": settings.clip_weights}))
    vocabulary = settings.clip_tokenizer or pathlib.Path(settings.clip_weights).expanduser().parent
    try:
        tokenizer = tokenizer_for(towers, vocabulary)
    except FileNotFoundError as error:
        raise SettingsError(Problem("{clip_tokenizer}: no CLIP vocabulary at {path} ({error})",
                                    {"path": str(vocabulary), "error": error})) from error
    scorer = clip_scorer(towers, tokenizer, settings.batch_size)
    scores, start = [], 0
    for batch in tqdm(batches, total=num_batches, desc="clip score", disable=not progress, leave=False):
        scores.append(scorer(batch, [prompts[j % len(prompts)] for j in range(start, start + len(batch))]))
        start += len(batch)
    joined = np.concatenate(scores).astype(np.float64)
    return {"clip_score": float(joined.mean()), "clip_score_std": float(joined.std())}, towers.describe()
