"""The first-stage training losses: the reference `LPIPSWithDiscriminator` (KL) and
`VQLPIPSWithDiscriminator` (VQ), as pure functions of arrays and callables.

Generator (optimizer_idx 0), per batch of N images x and reconstructions x_rec:

    rec      = |x - x_rec| + perceptual_weight * LPIPS(x, x_rec)            (per pixel)
    KL:  nll = sum(rec / exp(logvar) + logvar) / N,  kl = sum(posterior.kl()) / N
         loss = nll (times optional weights) + kl_weight * kl + d_weight * disc_factor * g_loss
    VQ:  nll = mean(rec) (l1 or l2 pixel term)
         loss = nll + d_weight * disc_factor * g_loss + codebook_weight * codebook_loss
    g_loss   = -mean(D(x_rec))
    d_weight = disc_weight * clip(||d nll / dW|| / (||d g_loss / dW|| + 1e-4), 0, 1e4), held constant,
               W = the decoder's last conv kernel (`decoder.conv_out`)
    disc_factor = disc_factor once global_step >= disc_start, else 0 (`adopt_weight`)

Discriminator (optimizer_idx 1): disc_factor * hinge or vanilla loss of D(x) and D(x_rec).

How the adaptive weight is computed in JAX: the caller passes `reconstruct(W)`, the reconstruction
as a function of the last-layer kernel alone (the decoder's features before `conv_out` held
fixed), and W itself. `last_layer_grads` takes one `jax.vjp` of (nll, g_loss) with respect to W and
pulls back the two unit cotangents: two backward passes through LPIPS and the discriminator only,
as torch's `autograd.grad(nll, last_layer)` does. The primal (nll, g_loss) from that vjp are the
ones the loss uses, so a surrounding `jax.grad` over all autoencoder params differentiates
through them normally, while `d_weight` is under `stop_gradient`.

Log keys are the reference's (without its "train/" prefix).
"""
import dataclasses
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from ldm_jax.models.discriminator import NLayerDiscriminator
from ldm_jax.models.distributions import DiagonalGaussian

Perceptual = Callable[[jax.Array, jax.Array], jax.Array]          # (x, x_rec) -> (N,) distances
Discriminate = Callable[[jax.Array], tuple[jax.Array, Any]]        # images -> (logits, discriminator state)
Reconstruct = Callable[[jax.Array], jax.Array]                     # last-layer kernel -> reconstructions


def adopt_weight(weight: float, global_step: jax.Array, threshold: int, value: float = 0.0) -> jax.Array:
    """`weight` from step `threshold` on, `value` before it (the reference `adopt_weight`)."""
    return jnp.where(global_step < threshold, value, weight).astype(jnp.float32)


def hinge_d_loss(logits_real: jax.Array, logits_fake: jax.Array) -> jax.Array:
    return 0.5 * (jnp.mean(jax.nn.relu(1.0 - logits_real)) + jnp.mean(jax.nn.relu(1.0 + logits_fake)))


def vanilla_d_loss(logits_real: jax.Array, logits_fake: jax.Array) -> jax.Array:
    return 0.5 * (jnp.mean(jax.nn.softplus(-logits_real)) + jnp.mean(jax.nn.softplus(logits_fake)))


DISC_LOSSES = {"hinge": hinge_d_loss, "vanilla": vanilla_d_loss}
PIXEL_LOSSES = {"l1": lambda x, y: jnp.abs(x - y), "l2": lambda x, y: jnp.square(x - y)}


def last_layer_grads(terms: Callable, last_layer: jax.Array):
    """((nll, g_loss), (d nll / dW, d g_loss / dW), aux) for `terms(W) -> ((nll, g_loss), aux)`."""
    (nll, g_loss), pullback, aux = jax.vjp(terms, last_layer, has_aux=True)
    one, zero = jnp.ones_like(nll), jnp.zeros_like(g_loss)
    (nll_grad,) = pullback((one, zero))
    (g_grad,) = pullback((jnp.zeros_like(nll), jnp.ones_like(g_loss)))
    return (nll, g_loss), (nll_grad, g_grad), aux


def adaptive_weight(nll_grad: jax.Array, g_grad: jax.Array, disc_weight: float) -> jax.Array:
    """disc_weight * clip(||nll_grad|| / (||g_grad|| + 1e-4), 0, 1e4), with no gradient of its own."""
    ratio = jnp.linalg.norm(nll_grad.ravel()) / (jnp.linalg.norm(g_grad.ravel()) + 1e-4)
    return jax.lax.stop_gradient(jnp.clip(ratio, 0.0, 1e4)) * disc_weight


@dataclasses.dataclass(frozen=True)
class PatchGANLoss:
    """What both reference losses share: LPIPS + pixel reconstruction and the PatchGAN part.

    `pixelloss_weight` is accepted and unused, as in the reference. `pixel_loss` ("l1" or "l2") is
    the VQ reference's option; the KL loss accepts it too (its reference is always L1, the default).
    """
    disc_start: int
    pixelloss_weight: float = 1.0
    disc_num_layers: int = 3
    disc_in_channels: int = 3
    disc_factor: float = 1.0
    disc_weight: float = 1.0
    perceptual_weight: float = 1.0
    use_actnorm: bool = False
    disc_conditional: bool = False
    disc_ndf: int = 64
    disc_loss: str = "hinge"
    pixel_loss: str = "l1"

    def __post_init__(self):
        name = type(self).__name__
        if self.pixel_loss not in PIXEL_LOSSES:
            raise ValueError(f"{name}.pixel_loss must be one of {sorted(PIXEL_LOSSES)}, got {self.pixel_loss!r}")
        if self.disc_loss not in DISC_LOSSES:
            raise ValueError(f"{name}.disc_loss must be one of {sorted(DISC_LOSSES)}, got {self.disc_loss!r}")
        if self.disc_conditional:
            raise ValueError(f"{name}.disc_conditional=True (a discriminator fed a condition) is not supported")
        if self.disc_num_layers < 1 or self.disc_ndf < 1:
            raise ValueError(f"{name} needs disc_num_layers >= 1 and disc_ndf >= 1, "
                             f"got {self.disc_num_layers} and {self.disc_ndf}")
        if self.perceptual_weight < 0:
            raise ValueError(f"{name}.perceptual_weight must be >= 0, got {self.perceptual_weight}")

    def discriminator(self, **module_kwargs) -> NLayerDiscriminator:
        """The PatchGAN this loss trains; `module_kwargs` sets dtype / param_dtype."""
        return NLayerDiscriminator(input_nc=self.disc_in_channels, ndf=self.disc_ndf, n_layers=self.disc_num_layers,
                                   use_actnorm=self.use_actnorm, **module_kwargs)

    def disc_factor_at(self, global_step: jax.Array) -> jax.Array:
        return adopt_weight(self.disc_factor, global_step, self.disc_start)

    def reconstruction_loss(self, inputs: jax.Array, reconstructions: jax.Array, perceptual: Perceptual | None
                            ) -> tuple[jax.Array, jax.Array]:
        """(per-pixel pixel + perceptual_weight * LPIPS term, the (N,) LPIPS distances or zeros)."""
        rec_loss = PIXEL_LOSSES[self.pixel_loss](inputs, reconstructions)
        if self.perceptual_weight > 0:
            if perceptual is None:
                raise ValueError(f"perceptual_weight={self.perceptual_weight} needs a perceptual (LPIPS) function")
            p_loss = perceptual(inputs, reconstructions).astype(jnp.float32)
            rec_loss = rec_loss + self.perceptual_weight * p_loss[:, None, None, None]
        else:
            p_loss = jnp.zeros(inputs.shape[:1], jnp.float32)
        return rec_loss, p_loss

    def discriminator_loss(self, logits_real: jax.Array, logits_fake: jax.Array, global_step: jax.Array
                           ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """(disc_factor * GAN loss, logs) from the logits of real images and of reconstructions."""
        logits_real = logits_real.astype(jnp.float32)
        logits_fake = logits_fake.astype(jnp.float32)
        d_loss = self.disc_factor_at(global_step) * DISC_LOSSES[self.disc_loss](logits_real, logits_fake)
        return d_loss, {"disc_loss": d_loss, "logits_real": jnp.mean(logits_real),
                        "logits_fake": jnp.mean(logits_fake)}


@dataclasses.dataclass(frozen=True)
class LPIPSWithDiscriminator(PatchGANLoss):
    """The KL autoencoder's loss (ldm.modules.losses.LPIPSWithDiscriminator)."""
    logvar_init: float = 0.0
    kl_weight: float = 1.0

    def generator_loss(self, inputs: jax.Array, reconstruct: Reconstruct, last_layer: jax.Array,
                       posterior: DiagonalGaussian, *, logvar: jax.Array, perceptual: Perceptual | None,
                       discriminate: Discriminate, global_step: jax.Array, weights: jax.Array | None = None):
        """(loss, logs, discriminator state after D(x_rec)); `weights` multiplies the per-pixel nll.

        The adaptive weight is computed only when disc_factor > 0 (else 0), as in the reference; with
        disc_factor 0 the discriminator is not run (g_loss 0, state None).
        """
        x = inputs.astype(jnp.float32)
        batch = x.shape[0]

        def terms(kernel):
            reconstructions = reconstruct(kernel).astype(jnp.float32)
            rec_loss, p_loss = self.reconstruction_loss(x, reconstructions, perceptual)
            nll = rec_loss / jnp.exp(logvar) + logvar
            weighted_nll = jnp.sum(nll if weights is None else weights * nll) / batch
            if self.disc_factor <= 0:  # no GAN term at all: the discriminator is not run
                return (jnp.sum(nll) / batch, jnp.zeros((), jnp.float32)), (weighted_nll, rec_loss, p_loss, None)
            logits_fake, disc_state = discriminate(reconstructions)
            g_loss = -jnp.mean(logits_fake.astype(jnp.float32))
            return (jnp.sum(nll) / batch, g_loss), (weighted_nll, rec_loss, p_loss, disc_state)

        if self.disc_factor > 0:
            (nll_loss, g_loss), (nll_grad, g_grad), aux = last_layer_grads(terms, last_layer)
            d_weight = adaptive_weight(nll_grad, g_grad, self.disc_weight)
        else:
            (nll_loss, g_loss), aux = terms(last_layer)
            d_weight = jnp.zeros((), jnp.float32)
        weighted_nll, rec_loss, p_loss, disc_state = aux
        kl_loss = jnp.sum(posterior.kl().astype(jnp.float32)) / batch
        disc_factor = self.disc_factor_at(global_step)
        loss = weighted_nll + self.kl_weight * kl_loss + d_weight * disc_factor * g_loss
        logs = {"total_loss": loss, "logvar": jnp.asarray(logvar, jnp.float32), "kl_loss": kl_loss,
                "nll_loss": nll_loss, "rec_loss": jnp.mean(rec_loss), "p_loss": jnp.mean(p_loss),
                "d_weight": d_weight, "disc_factor": disc_factor, "g_loss": g_loss}
        return loss, logs, disc_state


@dataclasses.dataclass(frozen=True)
class VQLPIPSWithDiscriminator(PatchGANLoss):
    """The VQ autoencoder's loss (taming / ldm VQLPIPSWithDiscriminator); `pixel_loss` "l1" or "l2"."""
    codebook_weight: float = 1.0
    perceptual_loss: str = "lpips"
    n_classes: int | None = None  # the reference's, only for a perplexity log it leaves commented out

    def __post_init__(self):
        super().__post_init__()
        if self.perceptual_loss != "lpips":
            raise ValueError(f"VQLPIPSWithDiscriminator.perceptual_loss: only 'lpips' exists, "
                             f"got {self.perceptual_loss!r}")

    def generator_loss(self, inputs: jax.Array, reconstruct: Reconstruct, last_layer: jax.Array,
                       codebook_loss: jax.Array, *, perceptual: Perceptual | None, discriminate: Discriminate,
                       global_step: jax.Array):
        """(loss, logs, discriminator state after D(x_rec)); the adaptive weight is always computed."""
        x = inputs.astype(jnp.float32)

        def terms(kernel):
            reconstructions = reconstruct(kernel).astype(jnp.float32)
            rec_loss, p_loss = self.reconstruction_loss(x, reconstructions, perceptual)
            logits_fake, disc_state = discriminate(reconstructions)
            return (jnp.mean(rec_loss), -jnp.mean(logits_fake.astype(jnp.float32))), (rec_loss, p_loss, disc_state)

        (nll_loss, g_loss), (nll_grad, g_grad), (rec_loss, p_loss, disc_state) = last_layer_grads(terms, last_layer)
        d_weight = adaptive_weight(nll_grad, g_grad, self.disc_weight)
        disc_factor = self.disc_factor_at(global_step)
        quant_loss = jnp.mean(codebook_loss.astype(jnp.float32))
        loss = nll_loss + d_weight * disc_factor * g_loss + self.codebook_weight * quant_loss
        logs = {"total_loss": loss, "quant_loss": quant_loss, "nll_loss": nll_loss, "rec_loss": jnp.mean(rec_loss),
                "p_loss": jnp.mean(p_loss), "d_weight": d_weight, "disc_factor": disc_factor, "g_loss": g_loss}
        return loss, logs, disc_state


AutoencoderLoss = LPIPSWithDiscriminator | VQLPIPSWithDiscriminator

_SHARED = frozenset({"disc_start", "pixelloss_weight", "disc_num_layers", "disc_in_channels", "disc_factor",
                     "disc_weight", "perceptual_weight", "use_actnorm", "disc_conditional", "disc_loss"})
_TAMING_VQ = _SHARED | {"codebook_weight", "disc_ndf"}
# reference `lossconfig.target` -> (loss class, the params that target accepts)
LOSS_TARGETS: dict[str, tuple[type, frozenset]] = {
    # pixel_loss is not a reference param of the KL loss (always L1 there): ours, for toy data.
    "ldm.modules.losses.LPIPSWithDiscriminator":
        (LPIPSWithDiscriminator, _SHARED | {"logvar_init", "kl_weight", "pixel_loss"}),
    "ldm.modules.losses.contperceptual.LPIPSWithDiscriminator":
        (LPIPSWithDiscriminator, _SHARED | {"logvar_init", "kl_weight", "pixel_loss"}),
    "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator": (VQLPIPSWithDiscriminator, _TAMING_VQ),
    "ldm.modules.losses.vqperceptual.VQLPIPSWithDiscriminator":
        (VQLPIPSWithDiscriminator, _TAMING_VQ | {"n_classes", "perceptual_loss", "pixel_loss"}),
}


def loss_from_reference(lossconfig: Mapping) -> AutoencoderLoss:
    """The loss of a reference `lossconfig` mapping {target, params}; unknown targets or params raise."""
    if hasattr(lossconfig, "to_dict"):
        lossconfig = lossconfig.to_dict()
    if not isinstance(lossconfig, Mapping) or "target" not in lossconfig:
        raise ValueError(f"lossconfig must be a mapping with 'target' and 'params', got {lossconfig!r}")
    target = lossconfig["target"]
    if target not in LOSS_TARGETS:
        raise ValueError(f"lossconfig.target {target!r} is not a supported loss; "
                         f"expected one of {sorted(LOSS_TARGETS)}")
    cls, allowed = LOSS_TARGETS[target]
    params = dict(lossconfig.get("params") or {})
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(f"lossconfig.params of {target}: unknown param(s) {unknown}; "
                         f"expected a subset of {sorted(allowed)}")
    if "disc_start" not in params:
        raise ValueError(f"lossconfig.params of {target} lacks 'disc_start'")
    return cls(**params)
