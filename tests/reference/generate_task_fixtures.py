"""Writes `tasks/`: whole-model runs of the original code (guided DDIM of an SD 2 v-model, of a
class-conditional LDM and of SD 2 inpainting, and the original code loading a checkpoint that our export
wrote), on small,
randomly initialised models (every parameter redrawn, as `generate_module_fixtures.randomise` does).

    .venv/bin/python tests/reference/generate_task_fixtures.py --latent-diffusion /tmp/latent-diffusion \
        --stablediffusion /tmp/stablediffusion --taming /tmp/taming-transformers

(checkouts at the commits of README.md). The first stage is `IdentityFirstStage` (the samplers run on
latents; the autoencoders are checked by the module fixtures) except for inpainting, which encodes the
masked image with the module fixtures' `ae_kl`. The cases and arrays: README.md. latent-diffusion's
concat models (super-resolution, semantic synthesis, inpainting): generate_concat_task_fixtures.py.
"""
import argparse
import copy
import pathlib
import sys
import tempfile

import numpy as np
import torch

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from tests.reference import original  # noqa: E402
from tests.reference.generate_module_fixtures import AE_KL, UNET, Writer, randomise  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parent / "tasks"
COMMITS = {"latent-diffusion": "a506df5756472e2ebaf9078affdde2c4f1502cd4",
           "stablediffusion": "cf1d67a6fd5ea1aa600c4df58e5b47da45f6bdbf",
           "taming-transformers": "3ba01b241669f5ade541ce990f7650a3b8f65318"}  # imported by latent-diffusion
STEPS, BATCH = 10, 2

IDENTITY_FIRST_STAGE = {"target": "ldm.models.autoencoder.IdentityFirstStage"}
# v2-inference-v.yaml with small sizes; the contexts are given directly (cond stage: identity).
SD2_V = {"target": "ldm.models.diffusion.ddpm.LatentDiffusion", "params": {
    "parameterization": "v", "linear_start": 0.00085, "linear_end": 0.012, "num_timesteps_cond": 1,
    "log_every_t": 200, "timesteps": 1000, "first_stage_key": "jpg", "cond_stage_key": "txt", "image_size": 8,
    "channels": 4, "cond_stage_trainable": False, "conditioning_key": "crossattn", "monitor": "val/loss_simple_ema",
    "scale_factor": 1.0, "use_ema": False,
    "unet_config": {"target": UNET, "params": {
        "use_checkpoint": True, "use_fp16": False, "image_size": 8, "in_channels": 4, "out_channels": 4,
        "model_channels": 32, "attention_resolutions": [1], "num_res_blocks": 1, "channel_mult": [1],
        "num_head_channels": 16, "use_spatial_transformer": True, "use_linear_in_transformer": True,
        "transformer_depth": 1, "context_dim": 32, "legacy": False}},
    "first_stage_config": IDENTITY_FIRST_STAGE, "cond_stage_config": {"target": "torch.nn.Identity"}}}
SD2_V_GUIDANCE = 4.0
# cin256-v2.yaml with small sizes: 10 classes + the null class 10 (the cin256 scripts' 1000).
CIN = {"target": "ldm.models.diffusion.ddpm.LatentDiffusion", "params": {
    "linear_start": 0.0015, "linear_end": 0.0195, "num_timesteps_cond": 1, "log_every_t": 200, "timesteps": 1000,
    "first_stage_key": "image", "cond_stage_key": "class_label", "image_size": 8, "channels": 3,
    "cond_stage_trainable": True, "conditioning_key": "crossattn", "monitor": "val/loss_simple_ema",
    "scale_factor": 1.0,
    "unet_config": {"target": UNET, "params": {
        "image_size": 8, "in_channels": 3, "out_channels": 3, "model_channels": 32, "attention_resolutions": [],
        "num_res_blocks": 1, "channel_mult": [1], "num_heads": 1, "use_spatial_transformer": True,
        "transformer_depth": 1, "context_dim": 32, "use_checkpoint": True, "legacy": False}},
    "first_stage_config": IDENTITY_FIRST_STAGE,
    "cond_stage_config": {"target": "ldm.modules.encoders.modules.ClassEmbedder",
                          "params": {"embed_dim": 32, "n_classes": 11, "key": "class_label"}}}}
CIN_GUIDANCE, CIN_NULL_CLASS = 3.0, 10
# v2-inpainting-inference.yaml with small sizes: the 9-channel UNet (4 latent + 1 mask + 4 masked-image
# channels). To stay small its weights are those of sd2_v_ddim except the input conv (own draw, seed 3401)
# and the first stage is the module fixtures' `ae_kl` (compvis/full_ckpt.safetensors, first_stage_model.*).
SD2_INPAINT = copy.deepcopy(SD2_V)
SD2_INPAINT["target"] = "ldm.models.diffusion.ddpm.LatentInpaintDiffusion"
SD2_INPAINT["params"].update(parameterization="eps", conditioning_key="hybrid", scale_factor=0.18215,
                             finetune_keys=None, first_stage_config=AE_KL)
SD2_INPAINT["params"]["unet_config"]["params"]["in_channels"] = 9
INPAINT_CONV_IN = "model.diffusion_model.input_blocks.0.0.weight"
AE_WEIGHTS = pathlib.Path(__file__).resolve().parent / "compvis" / "full_ckpt.safetensors"


def build(config, seed):
    from ldm.util import instantiate_from_config

    torch.manual_seed(seed)
    return randomise(instantiate_from_config(copy.deepcopy(config)))


def ddim_run(model, cond, uncond, x_T, guidance):
    """The reference DDIMSampler, eta 0, every step logged."""
    from ldm.models.diffusion.ddim import DDIMSampler

    original.cpu_samplers(DDIMSampler)
    samples, inter = DDIMSampler(model).sample(STEPS, BATCH, list(x_T.shape[1:]), conditioning=cond, eta=0.0,
                                               unconditional_guidance_scale=guidance,
                                               unconditional_conditioning=uncond, x_T=x_T, log_every_t=1,
                                               verbose=False)
    return {"samples": samples, "x_inter": torch.stack(inter["x_inter"]), "pred_x0": torch.stack(inter["pred_x0"])}


def sd2_v_ddim(w: Writer):
    w.yaml("sd2_v_ddim", {"model": SD2_V}, "Stability-AI/stablediffusion LatentDiffusion, parameterization v "
           "(v2-inference-v schema, small sizes; weights re-randomised, seed 3101)")
    model = build(SD2_V, 3101)
    w.weights("sd2_v_ddim", model)
    torch.manual_seed(3102)
    inputs = {"x_T": torch.randn(BATCH, 4, 8, 8), "cond": torch.randn(BATCH, 16, 32),
              "uncond": torch.randn(BATCH, 16, 32)}
    out = ddim_run(model, inputs["cond"], inputs["uncond"], inputs["x_T"], SD2_V_GUIDANCE)
    w.arrays("sd2_v_ddim", {**inputs, **out, "guidance_scale": np.float32(SD2_V_GUIDANCE)})
    return model


def sd2_inpaint_ddim(w: Writer, sd2_v):
    """LatentInpaintDiffusion: c_concat = [mask at latent size, scale * E(masked image)] as the SD 2
    inpainting scripts build it (`get_first_stage_encoding` samples the posterior: recorded, and its mode)."""
    from safetensors.torch import load_file, save_file

    w.yaml("sd2_inpaint", {"model": SD2_INPAINT}, "Stability-AI/stablediffusion LatentInpaintDiffusion "
           "(v2-inpainting-inference schema, small sizes).\nweights: sd2_v_ddim.safetensors with "
           f"{INPAINT_CONV_IN} from sd2_inpaint_conv_in.safetensors,\n+ first_stage_model.* of "
           "compvis/full_ckpt.safetensors")
    model = build(SD2_INPAINT, 3401)
    save_file({INPAINT_CONV_IN: model.state_dict()[INPAINT_CONV_IN].contiguous()},
              w.out / "sd2_inpaint_conv_in.safetensors")
    state = {k: v for k, v in sd2_v.state_dict().items() if k != INPAINT_CONV_IN}
    state.update({k: v for k, v in load_file(AE_WEIGHTS).items() if k.startswith("first_stage_model.")})
    state[INPAINT_CONV_IN] = model.state_dict()[INPAINT_CONV_IN]
    model.load_state_dict(state, strict=True)

    torch.manual_seed(3402)
    image = torch.rand(BATCH, 3, 64, 64) * 2 - 1
    mask = torch.zeros(BATCH, 1, 64, 64)
    mask[0, :, 8:40, 16:56] = 1
    mask[1, :, 24:64, 0:28] = 1
    inputs = {"x_T": torch.randn(BATCH, 4, 8, 8), "cond": torch.randn(BATCH, 16, 32),
              "uncond": torch.randn(BATCH, 16, 32), "image": image, "mask": mask}
    masked_image = image * (mask < 0.5)
    posterior = model.encode_first_stage(masked_image)
    torch.manual_seed(3403)
    masked_latents = model.get_first_stage_encoding(posterior)
    mask_latent = torch.nn.functional.interpolate(mask, size=masked_latents.shape[-2:])
    c_concat = torch.cat([mask_latent, masked_latents], dim=1)
    out = ddim_run(model, {"c_concat": [c_concat], "c_crossattn": [inputs["cond"]]},
                   {"c_concat": [c_concat], "c_crossattn": [inputs["uncond"]]}, inputs["x_T"], SD2_V_GUIDANCE)
    w.arrays("sd2_inpaint_ddim", {**inputs, **out, "c_concat": c_concat,
                                  "masked_latents_mode": model.scale_factor * posterior.mode(),
                                  "decoded": model.decode_first_stage(out["samples"]),
                                  "guidance_scale": np.float32(SD2_V_GUIDANCE)})


def cin_export_and_ddim(w: Writer):
    """The cin model (with perturbed EMA weights) read and exported by our `compvis.save_checkpoint`;
    the original code loads our file strictly, gives eps on it, and samples with its EMA weights as the
    cin256 scripts do (`ema_scope`, guidance against the null class)."""
    from ldm.util import instantiate_from_config
    from safetensors.torch import load_file, save_file

    from ldm_jax.convert import compvis

    w.yaml("cin", {"model": CIN}, "CompVis/latent-diffusion class-conditional LatentDiffusion (cin256-v2 "
           "schema, small sizes; weights re-randomised, seed 3201; use_ema true: DDPM's default)")
    source = build(CIN, 3201)
    torch.manual_seed(3202)  # EMA weights unlike the main ones, so reading the wrong set fails
    for name, p in source.model.named_parameters():
        shadow = getattr(source.model_ema, source.model_ema.m_name2s_name[name])
        shadow.copy_(p * (1 + 0.05 * torch.randn_like(p)) + 0.01 * torch.randn_like(p))
    source.model_ema.num_updates.fill_(4321)
    with tempfile.TemporaryDirectory() as tmp:  # ours reads the reference's state dict, then writes its own
        path = pathlib.Path(tmp) / "source.safetensors"
        save_file({k: v.contiguous() for k, v in source.state_dict().items()}, path)
        config, variables = compvis.load_checkpoint(path, w.out / "cin.yaml")
        _, ema = compvis.load_checkpoint(path, w.out / "cin.yaml", use_ema=True)
    compvis.save_checkpoint(w.out / "export.safetensors", config, variables, ema=ema["unet"],
                            ema_num_updates=4321)
    model = instantiate_from_config(copy.deepcopy(CIN)).eval()
    model.load_state_dict(load_file(w.out / "export.safetensors"), strict=True)

    torch.manual_seed(3203)
    inputs = {"x": torch.randn(BATCH, 3, 8, 8), "t": torch.randint(0, 1000, (BATCH,)),
              "class_labels": torch.tensor([1, CIN_NULL_CLASS])}
    c = model.get_learned_conditioning({model.cond_stage_key: inputs["class_labels"]})
    eps_main = model.apply_model(inputs["x"], inputs["t"], c)
    with model.ema_scope():
        eps_ema = model.apply_model(inputs["x"], inputs["t"], c)
    w.arrays("export", {**inputs, "eps_main": eps_main, "eps_ema": eps_ema,
                        "num_updates": model.model_ema.num_updates, "decay": model.model_ema.decay})

    torch.manual_seed(3204)
    labels, x_T = torch.tensor([3, 7]), torch.randn(BATCH, 3, 8, 8)
    with model.ema_scope():  # c of the labels, uc of the null class, as the cin256 scripts
        cond = model.get_learned_conditioning({model.cond_stage_key: labels})
        uncond = model.get_learned_conditioning({model.cond_stage_key: torch.full((BATCH,), CIN_NULL_CLASS)})
        out = ddim_run(model, cond, uncond, x_T, CIN_GUIDANCE)
    w.arrays("cin_ddim", {"x_T": x_T, "class_labels": labels, "cond": cond, "uncond": uncond, **out,
                          "guidance_scale": np.float32(CIN_GUIDANCE)})


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in COMMITS:
        parser.add_argument(f"--{name}" if name != "taming-transformers" else "--taming", type=pathlib.Path,
                            required=True, help=f"a checkout of {name} at {COMMITS[name][:7]}")
    parser.add_argument("--out", type=pathlib.Path, default=OUT)
    args = parser.parse_args()
    w = Writer(args.out, None)
    torch.set_num_threads(2)
    original.install_stubs()
    with torch.no_grad():
        original.use(args.stablediffusion)
        sd2_v = sd2_v_ddim(w)
        sd2_inpaint_ddim(w, sd2_v)
        original.use(args.latent_diffusion, args.taming)
        cin_export_and_ddim(w)
    w.manifest(COMMITS)


if __name__ == "__main__":
    main()
