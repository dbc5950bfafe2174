"""Writes `compvis/`: the module, schedule, sampler and checkpoint fixtures, computed by the original
PyTorch code on small, randomly initialised models (the cases and arrays are described in README.md).

    git clone https://github.com/CompVis/latent-diffusion /tmp/latent-diffusion
    git -C /tmp/latent-diffusion checkout a506df5756472e2ebaf9078affdde2c4f1502cd4
    git clone https://github.com/CompVis/stable-diffusion /tmp/stable-diffusion
    git -C /tmp/stable-diffusion checkout 21f890f9da3cfbeaba8e2ac3c425ee9e998d5229
    git clone https://github.com/Stability-AI/stablediffusion /tmp/stablediffusion
    git -C /tmp/stablediffusion checkout cf1d67a6fd5ea1aa600c4df58e5b47da45f6bdbf
    git clone https://github.com/CompVis/taming-transformers /tmp/taming-transformers
    git -C /tmp/taming-transformers checkout 3ba01b241669f5ade541ce990f7650a3b8f65318
    .venv/bin/python tests/reference/generate_module_fixtures.py --latent-diffusion /tmp/latent-diffusion \
        --stable-diffusion /tmp/stable-diffusion --stablediffusion /tmp/stablediffusion \
        --taming /tmp/taming-transformers

`--replay DIR` takes the weights and inputs from an earlier set instead of drawing them, and prints how
far the outputs are from that set's (a check of this generator against another run of the original code).
"""
import argparse
import copy
import hashlib
import io
import json
import math
import pathlib
import sys

import numpy as np
import torch
import yaml
from safetensors.numpy import load_file
from safetensors.torch import save_file
from torch import nn

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from tests.reference import original  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parent / "compvis"
COMMITS = {"latent-diffusion": "a506df5756472e2ebaf9078affdde2c4f1502cd4",
           "stable-diffusion": "21f890f9da3cfbeaba8e2ac3c425ee9e998d5229",
           "stablediffusion": "cf1d67a6fd5ea1aa600c4df58e5b47da45f6bdbf",
           "taming-transformers": "3ba01b241669f5ade541ce990f7650a3b8f65318"}

DDCONFIG_KL = {"double_z": True, "z_channels": 4, "resolution": 64, "in_channels": 3, "out_ch": 3, "ch": 32,
               "ch_mult": [1, 1, 1, 2], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}
DDCONFIG_VQ = dict(DDCONFIG_KL, double_z=False, z_channels=3, ch_mult=[1, 1, 1], attn_resolutions=[16])
IDENTITY_LOSS = {"target": "torch.nn.Identity"}
AE_KL = {"target": "ldm.models.autoencoder.AutoencoderKL",
         "params": {"embed_dim": 4, "monitor": "val/rec_loss", "ddconfig": DDCONFIG_KL, "lossconfig": IDENTITY_LOSS}}
AE_VQ = {"target": "ldm.models.autoencoder.VQModelInterface",
         "params": {"embed_dim": 3, "n_embed": 128, "monitor": "val/rec_loss", "ddconfig": DDCONFIG_VQ,
                    "lossconfig": IDENTITY_LOSS}}
UNET = "ldm.modules.diffusionmodules.openaimodel.UNetModel"
UNET_CROSSATTN = {"target": UNET, "params": {
    "image_size": 8, "in_channels": 4, "out_channels": 4, "model_channels": 32, "attention_resolutions": [4, 2],
    "num_res_blocks": 1, "channel_mult": [1, 1, 1], "num_heads": 4, "use_spatial_transformer": True,
    "transformer_depth": 1, "context_dim": 64, "use_checkpoint": True, "legacy": False}}
UNET_CLASS = {"target": UNET, "params": {
    "image_size": 16, "in_channels": 3, "out_channels": 3, "model_channels": 32, "attention_resolutions": [2],
    "num_res_blocks": 1, "channel_mult": [1, 2], "num_heads": 2, "num_classes": 10, "use_scale_shift_norm": True,
    "resblock_updown": True, "use_spatial_transformer": False}}
UNET_SD2 = {"target": UNET, "params": {
    "use_checkpoint": True, "use_fp16": False, "image_size": 8, "in_channels": 4, "out_channels": 4,
    "model_channels": 32, "attention_resolutions": [2, 1], "num_res_blocks": 2, "channel_mult": [1, 1],
    "num_head_channels": 16, "use_spatial_transformer": True, "use_linear_in_transformer": True,
    "transformer_depth": 1, "context_dim": 48, "legacy": False}}
BERT = {"target": "ldm.modules.encoders.modules.TransformerEmbedder",
        "params": {"n_embed": 32, "n_layer": 2, "vocab_size": 500, "max_seq_len": 32, "device": "cpu"}}
CLIP_TEXT_CONFIG = {"model_type": "clip_text_model", "vocab_size": 1000, "hidden_size": 64, "intermediate_size": 128,
                    "projection_dim": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                    "max_position_embeddings": 77, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
                    "attention_dropout": 0.0, "dropout": 0.0, "initializer_range": 0.02, "initializer_factor": 1.0,
                    "pad_token_id": 999, "bos_token_id": 998, "eos_token_id": 999}
CLIP = {"target": "ldm.modules.encoders.modules.FrozenCLIPEmbedder",
        "params": {"version": "tiny-random-clip-text (not on the hub; see clip_text_config.json)", "device": "cpu",
                   "max_length": 77}}
SCHEDULE = {"linear_start": 0.00085, "linear_end": 0.012, "timesteps": 1000}
LATENT_DIFFUSION = {"base_learning_rate": 0.0001, "target": "ldm.models.diffusion.ddpm.LatentDiffusion", "params": {
    **SCHEDULE, "num_timesteps_cond": 1, "log_every_t": 200, "first_stage_key": "jpg", "cond_stage_key": "txt",
    "image_size": 8, "channels": 4, "cond_stage_trainable": False, "conditioning_key": "crossattn",
    "monitor": "val/loss_simple_ema", "scale_factor": 0.18215, "use_ema": False, "unet_config": UNET_CROSSATTN,
    "first_stage_config": AE_KL, "cond_stage_config": CLIP}}
GUIDANCE = 3.0
SD1_CLIP_PREFIX = "cond_stage_model.transformer."  # + "text_model." in the SD v1 checkpoints


class Writer:
    """Writes the files of the set (or, replaying, compares with the earlier set's outputs)."""

    def __init__(self, out: pathlib.Path, replay: pathlib.Path | None):
        self.out, self.replay, self.report = out, replay, {}
        out.mkdir(parents=True, exist_ok=True)

    def yaml(self, name, document, comment):
        text = "".join(f"# {line}\n" for line in comment.splitlines())
        (self.out / f"{name}.yaml").write_text(text + yaml.safe_dump(document, sort_keys=False, width=120))

    def weights(self, name, module_or_state):
        """Saves a state dict; replaying, loads the earlier set's into the module instead."""
        if self.replay and isinstance(module_or_state, nn.Module):
            stored = {k: torch.from_numpy(v) for k, v in load_file(self.replay / f"{name}.safetensors").items()}
            module_or_state.load_state_dict(stored)
            return
        state = module_or_state.state_dict() if isinstance(module_or_state, nn.Module) else module_or_state
        save_file({k: v.detach().contiguous() for k, v in state.items()}, self.out / f"{name}.safetensors")

    def inputs(self, name, **arrays):
        """The drawn inputs as torch tensors; replaying, the earlier set's arrays of the same names."""
        if self.replay:
            stored = np.load(self.replay / f"{name}.npz")
            arrays = {k: torch.from_numpy(stored[k]) for k in arrays}
        return arrays

    def arrays(self, name, arrays):
        arrays = {k: v.detach().numpy() if torch.is_tensor(v) else np.asarray(v) for k, v in arrays.items()}
        if self.replay:
            stored = np.load(self.replay / f"{name}.npz")
            for key, value in arrays.items():
                ref = stored[key].astype(np.float64)
                gap = float(np.abs(value.astype(np.float64) - ref).max()) if ref.size else 0.0
                self.report[f"{name}/{key}"] = (gap, gap / max(1.0, float(np.abs(ref).max(initial=0))))
            return
        np.savez_compressed(self.out / f"{name}.npz", **arrays)

    def manifest(self, commits: dict) -> None:
        """manifest.json: the source commits, the versions and the sha256 of every file in the folder
        (task generators share theirs: each run lists what the folder holds)."""
        files = sorted(p for p in self.out.iterdir() if p.is_file() and p.name != "manifest.json")
        manifest = {"commits": commits, "torch": torch.__version__, "numpy": np.__version__,
                    "files": {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}}
        (self.out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        print(f"wrote {len(files)} files to {self.out} ({sum(p.stat().st_size for p in files)} bytes)")


def randomise(module: nn.Module, seed: int | None = None):
    """Redraws every parameter, in `named_modules` order: the reference init zeroes the output convs and
    leaves the norms at 1/0, so those weights would never be checked."""
    if seed is not None:
        torch.manual_seed(seed)
    with torch.no_grad():
        for _, owner in module.named_modules():
            norm = isinstance(owner, (nn.GroupNorm, nn.LayerNorm))
            for name, p in owner.named_parameters(recurse=False):
                if norm:
                    p.copy_(1 + 0.2 * torch.randn_like(p) if name == "weight" else 0.2 * torch.randn_like(p))
                elif p.ndim >= 2:
                    p.copy_(torch.randn_like(p) / math.sqrt(math.prod(p.shape[1:])))
                else:
                    p.copy_(0.1 * torch.randn_like(p))
    return module.eval()


def build(config, seed):
    from ldm.util import instantiate_from_config

    torch.manual_seed(seed)
    return randomise(instantiate_from_config(copy.deepcopy(config)))


def uniform(shape):
    return torch.rand(shape) * 2 - 1


def clip_ids(batch, lengths):
    """[BOS, k tokens, EOS, EOS padding...] as SD v1's tokenizer pads; k = 0 gives the empty prompt."""
    ids = torch.full((batch, 77), CLIP_TEXT_CONFIG["eos_token_id"], dtype=torch.int64)
    ids[:, 0] = CLIP_TEXT_CONFIG["bos_token_id"]
    for row, k in enumerate(lengths):
        ids[row, 1:1 + k] = torch.randint(0, 998, (k,))
    return ids


def unet_hooks(unet):
    """Debug activations (`dbg_*`): where a mismatch starts."""
    seen = {}
    modules = {"dbg_time_embed_out": unet.time_embed, "dbg_middle_block": unet.middle_block}
    modules.update({f"dbg_input_blocks_{i}": b for i, b in enumerate(unet.input_blocks)})
    modules.update({f"dbg_output_blocks_{i}": b for i, b in enumerate(unet.output_blocks)})
    for name, module in modules.items():
        module.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o.clone()))
    return seen


# --- the cases ---

def ae_kl(w: Writer):
    from ldm.modules.distributions.distributions import DiagonalGaussianDistribution

    w.yaml("ae_kl", {"model": AE_KL}, "AutoencoderKL (CompVis/latent-diffusion); weights ae_kl via full_ckpt: "
                                      "first_stage_model.* (re-randomised, seed 1101)")
    model = build(AE_KL, 1101)
    w.weights("ae_kl", model) if w.replay else None
    torch.manual_seed(1102)
    x = w.inputs("ae_kl", x=uniform((2, 3, 64, 64)))["x"]
    encoder_out = model.encoder(x)
    moments = model.quant_conv(encoder_out)
    posterior = DiagonalGaussianDistribution(moments)
    torch.manual_seed(1119)
    noise = torch.randn(posterior.mean.shape)
    torch.manual_seed(1119)
    sample = posterior.sample()
    w.arrays("ae_kl", {"x": x, "encoder_out": encoder_out, "moments": moments, "posterior_mean": posterior.mean,
                       "posterior_logvar": posterior.logvar, "posterior_std": posterior.std,
                       "decoded_mean": model.decode(posterior.mode()), "forward_dec": model(x, sample_posterior=False)[0],
                       "sample_noise": noise, "posterior_sample": sample, "decoded_sample": model.decode(sample),
                       "kl": posterior.kl()})
    return model


def ae_vq(w: Writer):
    w.yaml("ae_vq", {"model": AE_VQ}, "VQModelInterface (CompVis/latent-diffusion) + taming VectorQuantizer2 "
                                      "(beta 0.25, remap None, legacy).\nweights: ae_vq.safetensors, and "
                                      "ae_vq.ckpt (the same, as the Lightning pickle)")
    model = build(AE_VQ, 1201)
    torch.manual_seed(1202)
    x = uniform((2, 3, 64, 64))
    # A codebook that the activations really use: per-channel mean + std * N(0, 1) of the latents.
    h = model.encode(x)
    torch.manual_seed(1244)
    with torch.no_grad():
        model.quantize.embedding.weight.copy_(h.mean((0, 2, 3)) + h.std((0, 2, 3)) * torch.randn(128, 3))
    w.weights("ae_vq", model)
    x = w.inputs("ae_vq", x=x)["x"]
    h = model.encode(x)
    z_q, emb_loss, (_, _, indices) = model.quantize(h)
    n, c, height, width = h.shape
    w.arrays("ae_vq", {"x": x, "encoder_out": model.encoder(x), "h": h, "z_q": z_q, "indices": indices,
                       "emb_loss": emb_loss,
                       "codebook_entry_from_indices": model.quantize.get_codebook_entry(indices, (n, height, width, c)),
                       "decoded_from_h": model.decode(h), "decoded_from_zq": model.decode(z_q, force_not_quantize=True),
                       "decoded_from_h_not_quantized": model.decode(h, force_not_quantize=True),
                       "indices_bhw": indices.reshape(n, height, width)})
    if not w.replay:  # the pickle format of a released first-stage checkpoint (kept small: the VQ model)
        torch.save({"epoch": 7, "global_step": 123456, "state_dict": model.state_dict()}, w.out / "ae_vq.ckpt")
    distances = torch.cdist(h.permute(0, 2, 3, 1).reshape(-1, c), model.quantize.embedding.weight) ** 2
    nearest = distances.topk(2, largest=False).values
    print(f"ae_vq: {len(indices.unique())} codes used, smallest nearest/second gap "
          f"{float((nearest[:, 1] - nearest[:, 0]).min()):.3g}")


def unet(w: Writer, name, config, seed, context_dim=None, classes=None):
    w.yaml(name, {"model": config}, f"UNetModel construction params; weights re-randomised, seed {seed}")
    model = build(config, seed)
    if name != "unet_crossattn" or w.replay:
        w.weights(name, model)
    seen = unet_hooks(model)
    p = config["params"]
    torch.manual_seed(seed + 1)
    drawn = {"x": torch.randn(2, p["in_channels"], p["image_size"], p["image_size"]),
             "timesteps": torch.randint(0, 1000, (2,))}
    if context_dim:
        drawn["context"] = torch.randn(2, 77, context_dim)
    if classes:
        drawn["y"] = torch.randint(0, classes, (2,))
    inputs = w.inputs(name, **drawn)
    out = model(inputs["x"], timesteps=inputs["timesteps"], context=inputs.get("context"), y=inputs.get("y"))
    w.arrays(name, {**inputs, "out": out, **seen})
    return model


def bert_embedder(w: Writer):
    w.yaml("bert_embedder", {"model": BERT}, "TransformerEmbedder (vendored x-transformers; 8 heads x 64). "
                                             "In an LDM checkpoint its keys are under 'cond_stage_model.'")
    model = build(BERT, 1601)
    w.weights("bert_embedder", model)
    torch.manual_seed(1602)
    tokens = w.inputs("bert_embedder", tokens=torch.randint(0, 500, (2, 32)))["tokens"]
    w.arrays("bert_embedder", {"tokens": tokens, "embeddings": model(tokens)})


def sd_v1_clip_keys(state_dict, prefix=SD1_CLIP_PREFIX):
    """transformers 5 names CLIPTextModel's keys without `text_model.` and no longer saves the int64
    `position_ids`; the released SD v1 checkpoints (transformers 4.19) have both."""
    out = {}
    for key, value in state_dict.items():
        out[key.replace(prefix, prefix + "text_model.") if key.startswith(prefix) else key] = value
    out[prefix + "text_model.embeddings.position_ids"] = torch.arange(77, dtype=torch.int64)[None]
    return out


def transformers_clip_keys(state_dict, prefix=SD1_CLIP_PREFIX):
    """The inverse, for loading an SD v1 checkpoint into a transformers-5 CLIPTextModel."""
    return {k.replace(prefix + "text_model.", prefix): v for k, v in state_dict.items()
            if not k.endswith("embeddings.position_ids")}


def clip_text(w: Writer):
    from ldm.modules.encoders import modules

    original.small_clip(modules, CLIP_TEXT_CONFIG)
    w.yaml("clip_text", {"cond_stage_config": CLIP}, "SD v1 FrozenCLIPEmbedder (CompVis/stable-diffusion) with a "
                                                     "small random CLIPTextModel (clip_text_config.json)")
    (w.out / "clip_text_config.json").write_text(json.dumps(CLIP_TEXT_CONFIG, indent=1) + "\n")
    torch.manual_seed(1701)
    embedder = randomise(modules.FrozenCLIPEmbedder(**CLIP["params"]))
    if w.replay:
        stored = transformers_clip_keys(load_file(w.replay / "full_ckpt.safetensors"))
        embedder.load_state_dict({k[len("cond_stage_model."):]: torch.from_numpy(v) for k, v in stored.items()
                                  if k.startswith(SD1_CLIP_PREFIX)})
    torch.manual_seed(1702)
    ids = w.inputs("clip_text", input_ids=clip_ids(2, lengths=torch.randint(1, 20, (2,)).tolist()))["input_ids"]
    out = embedder.transformer(input_ids=ids, output_hidden_states=True)
    w.arrays("clip_text", {"input_ids": ids, "last_hidden_state": out.last_hidden_state,
                           "pooler_output": out.pooler_output, "hidden_states": torch.stack(out.hidden_states)})
    return embedder


def schedule(w: Writer):
    from ldm.models.diffusion.ddim import DDIMSampler
    from ldm.models.diffusion.ddpm import DDPM
    from ldm.modules.diffusionmodules.util import make_beta_schedule

    settings = [(10, 0.0), (25, 1.0), (30, 0.0)]
    w.yaml("schedule", {"model": {"target": "ldm.models.diffusion.ddpm.DDPM / LatentDiffusion", "params": {
        **SCHEDULE, "beta_schedule": "linear", "parameterization": "eps", "v_posterior": 0.0}},
        "ddim": [{"ddim_num_steps": s, "ddim_eta": eta, "ddim_discretize": "uniform"} for s, eta in settings]},
        "DDPM.register_schedule buffers + DDIMSampler.make_schedule (CompVis/latent-diffusion)")
    original.cpu_samplers(DDIMSampler)
    ddpm = DDPM(unet_config=UNET_CROSSATTN, use_ema=False, **SCHEDULE)
    buffers = {k: v for k, v in ddpm.state_dict().items() if not k.startswith("model.")}
    w.weights("schedule", buffers) if not w.replay else None
    arrays = {**buffers, "lvlb_weights": ddpm.lvlb_weights,
              "betas_f64": make_beta_schedule("linear", 1000, SCHEDULE["linear_start"], SCHEDULE["linear_end"])}
    for steps, eta in settings:
        sampler = DDIMSampler(ddpm)
        sampler.make_schedule(steps, ddim_eta=eta, verbose=False)
        tag = f"ddim_S{steps}_eta{str(eta).replace('.', 'p')}_"
        arrays.update({tag + "timesteps": np.asarray(sampler.ddim_timesteps, np.int64),
                       tag + "alphas": sampler.ddim_alphas, tag + "alphas_prev_f64": sampler.ddim_alphas_prev,
                       tag + "alphas_prev": np.float32(sampler.ddim_alphas_prev),
                       tag + "sigmas_f64": sampler.ddim_sigmas.double(), tag + "sigmas": sampler.ddim_sigmas.float(),
                       tag + "sqrt_one_minus_alphas": sampler.ddim_sqrt_one_minus_alphas,
                       tag + "sigmas_for_original_num_steps": sampler.ddim_sigmas_for_original_num_steps})
    arrays = {k: torch.as_tensor(v) for k, v in arrays.items()}  # float32 except the *_f64 copies
    w.arrays("schedule", {k: v.float() if v.is_floating_point() and not k.endswith("_f64") else v
                          for k, v in arrays.items()})


def full_checkpoint(w: Writer, unet_crossattn, autoencoder, embedder):
    """A real LatentDiffusion(use_ema=True) state dict holding the case weights, the way txt2img loads it."""
    from ldm.models.diffusion import ddim, plms
    from ldm.modules.encoders import modules
    from ldm.util import instantiate_from_config

    original.small_clip(modules, CLIP_TEXT_CONFIG)
    original.cpu_samplers(ddim.DDIMSampler, plms.PLMSSampler)
    w.yaml("full_ckpt", {"model": LATENT_DIFFUSION}, "Inference config of full_ckpt.safetensors "
           "(configs/stable-diffusion/v1-inference.yaml schema, small sizes).\nuse_ema: False => "
           "model.diffusion_model.* are the weights; model_ema.* are deliberately different")
    with_ema = copy.deepcopy(LATENT_DIFFUSION)
    with_ema["params"]["use_ema"] = True
    model = instantiate_from_config(with_ema).eval()
    model.model.diffusion_model.load_state_dict(unet_crossattn.state_dict())
    model.first_stage_model.load_state_dict(autoencoder.state_dict())
    model.cond_stage_model.load_state_dict(embedder.state_dict())
    torch.manual_seed(1951)  # EMA weights unlike the main ones, so reading the wrong set fails
    with torch.no_grad():
        for name, p in model.model.named_parameters():
            shadow = getattr(model.model_ema, model.model_ema.m_name2s_name[name])
            shadow.copy_(p * (1 + 0.05 * torch.randn_like(p)) + 0.01 * torch.randn_like(p))
        model.model_ema.num_updates.fill_(4321)
    state_dict = sd_v1_clip_keys(model.state_dict())
    if w.replay:
        state_dict = {k: torch.from_numpy(v) for k, v in load_file(w.replay / "full_ckpt.safetensors").items()}
    else:
        w.weights("full_ckpt", state_dict)
    model.load_state_dict(transformers_clip_keys(state_dict))
    pickle = io.BytesIO()  # txt2img's path: torch.load the Lightning pickle, load_state_dict(strict=False)
    torch.save({"epoch": 7, "global_step": 123456, "state_dict": state_dict}, pickle)
    pickle.seek(0)
    loaded = instantiate_from_config(copy.deepcopy(LATENT_DIFFUSION)).eval()
    missing, unexpected = loaded.load_state_dict(
        transformers_clip_keys(torch.load(pickle, weights_only=True)["state_dict"]), strict=False)
    assert not missing and all(k.startswith("model_ema.") for k in unexpected), (missing, unexpected)

    torch.manual_seed(1901)
    drawn = {"x_T": torch.randn(2, 4, 8, 8), "cond": torch.randn(2, 77, 64), "uncond": torch.randn(2, 77, 64),
             "e2e_cond_ids": clip_ids(2, lengths=[5, 9]), "e2e_uncond_ids": clip_ids(2, lengths=[0, 0])}
    sample_inputs = w.inputs("sample", **drawn)
    torch.manual_seed(1903)
    chk = w.inputs("full_ckpt", chk_x=torch.randn(2, 4, 8, 8), chk_t=torch.randint(0, 1000, (2,)),
                   chk_z=torch.randn(2, 4, 8, 8))
    chk.update(chk_context=sample_inputs["cond"], chk_clip_input_ids=sample_inputs["e2e_cond_ids"])
    with model.ema_scope():
        eps_ema = model.apply_model(chk["chk_x"], chk["chk_t"], chk["chk_context"])
    w.arrays("full_ckpt", {**chk, "chk_eps_main": loaded.apply_model(chk["chk_x"], chk["chk_t"], chk["chk_context"]),
                           "chk_decode_first_stage": loaded.decode_first_stage(chk["chk_z"]),
                           "chk_clip_last_hidden_state": loaded.cond_stage_model.transformer(
                               input_ids=chk["chk_clip_input_ids"]).last_hidden_state,
                           "chk_eps_ema": eps_ema})
    sample(w, loaded, sample_inputs)


def sample(w: Writer, model, inputs):
    from ldm.models.diffusion import ddim, plms

    w.yaml("sample", {"model": LATENT_DIFFUSION, "sampling": {
        "latent_shape": [4, 8, 8], "batch_size": 2, "scale_factor": 0.18215,
        "ddim": {"S": 10, "eta": 0.0, "unconditional_guidance_scale": GUIDANCE},
        "plms": {"S": 10, "eta": 0.0, "unconditional_guidance_scale": GUIDANCE},
        "ddim_eta1": {"S": 10, "eta": 1.0, "unconditional_guidance_scale": GUIDANCE, "torch_manual_seed": 1902},
        "e2e": {"S": 10, "eta": 0.0, "unconditional_guidance_scale": GUIDANCE},
        "weights": "full_ckpt.safetensors (model.diffusion_model.*, first_stage_model.*, cond_stage_model.*)"}},
        "Sampler runs of the full_ckpt model (CompVis/stable-diffusion DDIMSampler / PLMSSampler)")
    calls, noises = [], []
    apply_model = model.apply_model
    model.apply_model = lambda x, t, c: (calls.append(t.clone()), apply_model(x, t, c))[1]
    noise_like = ddim.noise_like
    ddim.noise_like = lambda *a, **k: (noises.append(noise_like(*a, **k)), noises[-1])[1]

    def run(sampler_class, cond, uncond, eta):
        calls.clear()
        sampler = sampler_class(model)
        samples, inter = sampler.sample(10, 2, [4, 8, 8], conditioning=cond, verbose=False, eta=eta,
                                        unconditional_guidance_scale=GUIDANCE, unconditional_conditioning=uncond,
                                        x_T=inputs["x_T"], log_every_t=1)
        return sampler, {"samples": samples, "decoded": model.decode_first_stage(samples),
                         "x_inter": torch.stack(inter["x_inter"]), "pred_x0": torch.stack(inter["pred_x0"]),
                         "timesteps": np.asarray(sampler.ddim_timesteps, np.int64),
                         "model_call_timesteps": torch.stack(calls)}

    arrays = dict(inputs)
    _, out = run(ddim.DDIMSampler, inputs["cond"], inputs["uncond"], 0.0)
    arrays.update({"ddim_" + k: v for k, v in out.items()})
    _, out = run(plms.PLMSSampler, inputs["cond"], inputs["uncond"], 0.0)
    arrays.update({"plms_" + k: v for k, v in out.items()})
    torch.manual_seed(1902)
    noises.clear()
    sampler, out = run(ddim.DDIMSampler, inputs["cond"], inputs["uncond"], 1.0)
    arrays.update({"ddim_eta1_" + k: out[k] for k in ("samples", "decoded", "x_inter", "timesteps")})
    arrays.update(ddim_eta1_noises=torch.stack(noises), ddim_eta1_sigmas=sampler.ddim_sigmas.float())
    text = model.cond_stage_model.transformer
    e2e_cond = text(input_ids=inputs["e2e_cond_ids"]).last_hidden_state
    e2e_uncond = text(input_ids=inputs["e2e_uncond_ids"]).last_hidden_state
    _, out = run(ddim.DDIMSampler, e2e_cond, e2e_uncond, 0.0)
    arrays.update(e2e_cond=e2e_cond, e2e_uncond=e2e_uncond, e2e_samples=out["samples"], e2e_decoded=out["decoded"])
    w.arrays("sample", arrays)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in COMMITS:
        parser.add_argument(f"--{name}" if name != "taming-transformers" else "--taming", type=pathlib.Path,
                            required=True, help=f"a checkout of {name} at {COMMITS[name][:7]}")
    parser.add_argument("--out", type=pathlib.Path, default=OUT)
    parser.add_argument("--replay", type=pathlib.Path, help="an earlier set to compare with (nothing is written)")
    args = parser.parse_args()
    w = Writer(args.out if not args.replay else pathlib.Path("/tmp/replay-unused"), args.replay)
    torch.set_num_threads(2)
    original.install_stubs()
    with torch.no_grad():
        original.use(args.latent_diffusion, args.taming)
        autoencoder = ae_kl(w)
        ae_vq(w)
        unet_crossattn = unet(w, "unet_crossattn", UNET_CROSSATTN, 1301, context_dim=64)
        unet(w, "unet_class", UNET_CLASS, 1401, classes=10)
        bert_embedder(w)
        schedule(w)
        original.use(args.stablediffusion)
        unet(w, "unet_sd2", UNET_SD2, 1501, context_dim=48)
        original.use(args.stable_diffusion, args.taming)
        embedder = clip_text(w)
        full_checkpoint(w, unet_crossattn, autoencoder, embedder)
    if w.replay:
        for key, (gap, relative) in w.report.items():
            print(f"{key:45s} max abs {gap:.3g}  rel {relative:.3g}")
        return
    w.manifest(COMMITS)


if __name__ == "__main__":
    main()
