"""Writes the concat-conditioned latent-diffusion tasks of `tasks/`: super-resolution (bsr_sr), semantic
synthesis (semantic_synthesis256) and inpainting (inpainting_big), sampled by the original code as its
notebook helpers and scripts do, on small randomly initialised models (every parameter redrawn, as
`generate_module_fixtures.randomise` does).

    .venv/bin/python tests/reference/generate_concat_task_fixtures.py --latent-diffusion /tmp/latent-diffusion \
        --taming /tmp/taming-transformers

(checkouts at the commits of README.md). To stay small the three models share one UNet (in_channels 6:
3 latent + 3 concat; inpainting redraws only its 7-channel input conv) and the first stage is the module
fixtures' `ae_vq` (VQ, f=4, compvis/ae_vq.safetensors). The cases and arrays: README.md.
"""
import argparse
import copy
import pathlib
import sys

import numpy as np
import torch

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from tests.reference import original  # noqa: E402
from tests.reference.generate_module_fixtures import AE_VQ, UNET, Writer  # noqa: E402
from tests.reference.generate_task_fixtures import COMMITS as TASK_COMMITS, OUT, build  # noqa: E402

COMMITS = {"latent-diffusion": "a506df5756472e2ebaf9078affdde2c4f1502cd4",
           "taming-transformers": "3ba01b241669f5ade541ce990f7650a3b8f65318"}
STEPS, BATCH = 5, 2
AE_VQ_WEIGHTS = pathlib.Path(__file__).resolve().parent / "compvis" / "ae_vq.safetensors"

# models/ldm/bsr_sr/config.yaml with small sizes: `concat_mode: true` and no conditioning_key (so "concat"),
# the identity cond stage (the low-res image in [-1, 1] is the concat input), VQ-f4 first stage.
# use_ema false: the randomised weights are the only ones (the released checkpoints' EMA is not stored).
UNET_6 = {"target": UNET, "params": {
    "image_size": 8, "in_channels": 6, "out_channels": 3, "model_channels": 32, "attention_resolutions": [1],
    "num_res_blocks": 1, "channel_mult": [1], "num_head_channels": 32}}
SR = {"target": "ldm.models.diffusion.ddpm.LatentDiffusion", "params": {
    "linear_start": 0.0015, "linear_end": 0.0155, "log_every_t": 100, "timesteps": 1000, "loss_type": "l2",
    "first_stage_key": "image", "cond_stage_key": "LR_image", "image_size": 8, "channels": 3, "concat_mode": True,
    "cond_stage_trainable": False, "use_ema": False, "unet_config": UNET_6, "first_stage_config": AE_VQ,
    "cond_stage_config": {"target": "torch.nn.Identity"}}}
SR_ETA = 1.0  # notebook_helpers.run's eta (its noises are recorded)
# models/ldm/semantic_synthesis256/config.yaml with small sizes: SpatialRescaler (2 stages of bilinear 0.5,
# then a 1x1 conv, no bias) of a one-hot map of 5 classes to the 3 concat channels.
N_CLASSES = 5
SEMANTIC = copy.deepcopy(SR)
SEMANTIC["params"].update(linear_end=0.0205, loss_type="l1", cond_stage_key="segmentation", cond_stage_trainable=True,
                          cond_stage_config={"target": "ldm.modules.encoders.modules.SpatialRescaler", "params": {
                              "n_stages": 2, "in_channels": N_CLASSES, "out_channels": 3}})
# models/ldm/inpainting_big/config.yaml with small sizes: the first stage is the cond stage
# (`__is_first_stage__`); concat = [E(masked image), mask at latent size]: 7 UNet input channels.
INPAINT = copy.deepcopy(SR)
INPAINT["params"].update(linear_end=0.0205, loss_type="l1", cond_stage_key="masked_image",
                         cond_stage_config="__is_first_stage__")
INPAINT["params"]["unet_config"]["params"]["in_channels"] = 7
CONV_IN = "model.diffusion_model.input_blocks.0.0.weight"


def with_ae_vq(model):
    from safetensors.torch import load_file

    model.first_stage_model.load_state_dict(load_file(AE_VQ_WEIGHTS), strict=True)
    return model


def ddim(model, cond, x_T, eta=0.0):
    """notebook_helpers.convsample_ddim / scripts/inpaint.py: DDIMSampler.sample on the concat condition
    (unguided), every step logged; with eta > 0 the noises the sampler draws are recorded."""
    from ldm.models.diffusion import ddim as ddim_module

    original.cpu_samplers(ddim_module.DDIMSampler)
    noises, noise_like = [], ddim_module.noise_like
    ddim_module.noise_like = lambda *a, **k: (noises.append(noise_like(*a, **k)), noises[-1])[1]
    try:
        samples, inter = ddim_module.DDIMSampler(model).sample(
            STEPS, batch_size=x_T.shape[0], shape=list(x_T.shape[1:]), conditioning=cond, eta=eta, x_T=x_T,
            log_every_t=1, verbose=False)
    finally:
        ddim_module.noise_like = noise_like
    out = {"samples": samples, "x_inter": torch.stack(inter["x_inter"]), "pred_x0": torch.stack(inter["pred_x0"]),
           "eta": np.float32(eta)}
    if eta > 0:
        out["noises"] = torch.stack(noises)  # (STEPS, N, C, h, w), in sampling order
    return out


def super_resolution(w: Writer):
    """notebook_helpers.make_convolutional_sample: `get_input` on {"image", "LR_image"} (b h w c, the
    low-res image mapped by 2x-1), DDIM with eta 1 in `ema_scope`, VQ decode (quantised and not); then the
    same model convolutionally on a 2x larger input (the notebook's path below 128 px: no split_input_params)."""
    w.yaml("ldm_sr", {"model": SR}, "CompVis/latent-diffusion bsr_sr LatentDiffusion (models/ldm/bsr_sr schema, "
           "small sizes; weights re-randomised, seed 3501).\nweights: ldm_concat_unet.safetensors + "
           "first_stage_model.* = compvis/ae_vq.safetensors")
    model = with_ae_vq(build(SR, 3501))
    assert model.model.conditioning_key == "concat"
    for p in model.model.parameters():  # stored as float16 (half the size), run in float32
        p.copy_(p.half().float())
    w.weights("ldm_concat_unet", {k: v.half() for k, v in model.state_dict().items() if k.startswith("model.")})
    for name, side, batch_size, seed in (("ldm_sr_ddim", 8, BATCH, 3502), ("ldm_sr_large_ddim", 16, 1, 3503)):
        torch.manual_seed(seed)
        low_res = torch.rand(batch_size, side, side, 3)  # ToTensor's [0, 1]
        x_T = torch.randn(batch_size, 3, side, side)
        batch = {"LR_image": 2 * low_res - 1,
                 "image": torch.nn.functional.interpolate(low_res.permute(0, 3, 1, 2), scale_factor=4,
                                                          mode="bicubic").permute(0, 2, 3, 1)}
        z, c, x, xrec, xc = model.get_input(batch, model.first_stage_key, return_first_stage_outputs=True,
                                            force_c_encode=True, return_original_cond=True)
        assert z.shape == x_T.shape
        with model.ema_scope("Plotting"):
            out = ddim(model, c, x_T, SR_ETA)
        arrays = {"low_res": batch["LR_image"].permute(0, 3, 1, 2), "x_T": x_T, "cond": c, **out,
                  "decoded": model.decode_first_stage(out["samples"]),
                  "decoded_noquant": model.decode_first_stage(out["samples"], force_not_quantize=True)}
        if side > 8:  # the larger run: final latents and the quantised decode only (size)
            arrays = {k: v for k, v in arrays.items() if k not in ("x_inter", "pred_x0", "decoded_noquant")}
        w.arrays(name, arrays)
    return model


def semantic_synthesis(w: Writer, sr):
    """A one-hot label map (b h w c, as the datasets give it) through `get_learned_conditioning`
    (SpatialRescaler.encode), DDIM eta 0."""
    from safetensors.torch import save_file

    w.yaml("ldm_semantic", {"model": SEMANTIC}, "CompVis/latent-diffusion semantic synthesis LatentDiffusion "
           "(models/ldm/semantic_synthesis256 schema, small sizes; SpatialRescaler re-randomised, seed 3601).\n"
           "weights: ldm_concat_unet.safetensors + ldm_semantic_cond_stage.safetensors + first_stage_model.* "
           "= compvis/ae_vq.safetensors")
    model = with_ae_vq(build(SEMANTIC, 3601))
    model.model.load_state_dict(sr.model.state_dict(), strict=True)
    cond_stage = {k: v.contiguous() for k, v in model.state_dict().items() if k.startswith("cond_stage_model.")}
    save_file(cond_stage, w.out / "ldm_semantic_cond_stage.safetensors")
    torch.manual_seed(3602)
    labels = torch.randint(0, N_CLASSES, (BATCH, 32, 32))
    labels[:, 8:24, 4:20] = 2  # some regions larger than a latent pixel
    onehot = torch.nn.functional.one_hot(labels, N_CLASSES).float()  # b h w c
    x_T = torch.randn(BATCH, 3, 8, 8)
    c = model.get_learned_conditioning(onehot.permute(0, 3, 1, 2))
    out = ddim(model, c, x_T)
    w.arrays("ldm_semantic_ddim", {"labels": labels, "x_T": x_T, "cond": c, **out,
                                   "decoded": model.decode_first_stage(out["samples"])})


def inpainting(w: Writer, sr):
    """scripts/inpaint.py: make_batch (image, mask >= 0.5, masked_image = (1 - mask) * image, all mapped
    by 2x-1), c = cat(cond_stage_model.encode(masked_image), interpolate(mask)), DDIM (eta 0) in
    `ema_scope`, decode, and the known pixels pasted back."""
    from safetensors.torch import save_file

    w.yaml("ldm_inpaint", {"model": INPAINT}, "CompVis/latent-diffusion inpainting LatentDiffusion "
           "(models/ldm/inpainting_big schema, small sizes).\nweights: ldm_concat_unet.safetensors with "
           f"{CONV_IN} from ldm_inpaint_conv_in.safetensors (seed 3701),\n+ first_stage_model.* = "
           "compvis/ae_vq.safetensors (also the cond stage)")
    model = with_ae_vq(build(INPAINT, 3701))
    save_file({CONV_IN: model.state_dict()[CONV_IN].contiguous()}, w.out / "ldm_inpaint_conv_in.safetensors")
    state = {k: v for k, v in sr.model.state_dict().items() if "model." + k != CONV_IN}
    model.model.load_state_dict({**state, CONV_IN[len("model."):]: model.state_dict()[CONV_IN]}, strict=True)
    torch.manual_seed(3702)
    image = torch.rand(BATCH, 3, 32, 32)
    mask = torch.rand(BATCH, 1, 32, 32) * 0.2  # grey levels below 0.5 become 0, at or above 1
    mask[0, :, 4:20, 8:28] = 0.9
    mask[1, :, 12:32, 0:14] = 0.6
    x_T = torch.randn(BATCH, 3, 8, 8)
    inputs = {"image01": image, "mask01": mask, "x_T": x_T}
    mask = (mask >= 0.5).float()
    batch = {k: v * 2.0 - 1.0 for k, v in {"image": image, "mask": mask, "masked_image": (1 - mask) * image}.items()}
    with model.ema_scope():
        c = model.cond_stage_model.encode(batch["masked_image"])
        cc = torch.nn.functional.interpolate(batch["mask"], size=c.shape[-2:])
        c = torch.cat((c, cc), dim=1)
        assert (c.shape[1] - 1,) + c.shape[2:] == x_T.shape[1:]
        out = ddim(model, c, x_T)
        decoded = model.decode_first_stage(out["samples"])
    image01 = torch.clamp((batch["image"] + 1.0) / 2.0, min=0.0, max=1.0)
    mask01 = torch.clamp((batch["mask"] + 1.0) / 2.0, min=0.0, max=1.0)
    predicted = torch.clamp((decoded + 1.0) / 2.0, min=0.0, max=1.0)
    w.arrays("ldm_inpaint_ddim", {**inputs, "c_concat": c, **out, "decoded": decoded,
                                  "inpainted": (1 - mask01) * image01 + mask01 * predicted})


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latent-diffusion", type=pathlib.Path, required=True,
                        help=f"a checkout of latent-diffusion at {COMMITS['latent-diffusion'][:7]}")
    parser.add_argument("--taming", type=pathlib.Path, required=True,
                        help=f"a checkout of taming-transformers at {COMMITS['taming-transformers'][:7]}")
    parser.add_argument("--out", type=pathlib.Path, default=OUT)
    args = parser.parse_args()
    w = Writer(args.out, None)
    torch.set_num_threads(2)
    original.install_stubs()
    with torch.no_grad():
        original.use(args.latent_diffusion, args.taming)
        sr = super_resolution(w)
        semantic_synthesis(w, sr)
        inpainting(w, sr)
    w.manifest(TASK_COMMITS)  # the folder is shared with generate_task_fixtures.py


if __name__ == "__main__":
    main()
