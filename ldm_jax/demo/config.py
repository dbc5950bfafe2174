"""The demo's config: what `make demo` (`ldm-jax demo`) trains, samples and measures.

The paper's pipeline end to end on the built-in coloured shapes (12 classes, 32x32, on plain white /
black / gray backgrounds):
1. a KL-f4 autoencoder (32x32x3 images -> 8x8x3 latents);
2. a text-conditional LDM on its latents: a BERT-like transformer trained jointly over the built-in
   word vocabulary (as the paper's text-to-image LDM), prompted with a class name ("a red circle")
   or a whole caption ("a red circle on a black background"), guidance dropout 0.1;
3. a pixel-space diffusion model (the same UNet family on 32x32x3 pixels, one level deeper) trained
   for about the same wall time as the LDM: the paper's central comparison, at toy scale;
4. samples per prompt with classifier-free guidance, and a report: reconstruction PSNR / SSIM,
   prompt adherence (the dataset's checker) at the demo's guidance vs guidance 1 vs unconditional,
   and FID on the features of a small classifier trained on the built-in set, LDM vs pixel model.

    ldm-jax demo --out out                                    # default: ~23 min on 2 CPU cores
    ldm-jax demo --out out --config configs/demo.py:large     # 64x64, longer (for an accelerator)
    ldm-jax demo --out out --data-dir /data/my_images         # a folder of your images: class sub-folders
                                                              # and / or <stem>.txt captions (demo.data_plan)
    ldm-jax demo --out out --config.ldm.train.num_steps=3000  # any field, as `ldm-jax train`

Step counts are fixed (not wall-time budgets) so that one seed gives the same report on one machine;
the pixel model's were chosen so that it trains for about as long as the LDM on 2 CPU cores
(`report.md` shows both wall times).

What makes the toy budget work (each measured on this task; see the comments where they are set):
squared-error reconstruction loss for the autoencoder, 8 norm groups in the narrow networks, the
prompt's pooled embedding added to the UNet's timestep embedding, and Min-SNR-5 loss weights.
"""
import ml_collections

from ldm_jax import zoo
from ldm_jax.data import synthetic
from ldm_jax.models import tokenizers

# The built-in word-level vocabulary (the vocab.txt the demo writes): BERT's special tokens, then
# every caption word.
VOCABULARY = tokenizers.BERT_SPECIAL_TOKENS + synthetic.caption_words()
MAX_TOKENS = 12  # [CLS] + the longest caption (7 words) + [SEP], padded

CLASS_PROMPTS = tuple(f"a {name}" for name in synthetic.class_names())
CAPTION_PROMPTS = ("a red circle on a white background", "a green square on a black background",
                   "a blue triangle on a gray background", "a yellow circle on a black background",
                   "a picture of a red triangle", "a circle in green on gray")
# Plain backgrounds: a toy budget learns the 12 classes on them; coloured ones take far longer.
BACKGROUNDS = "white,black,gray"


def _first_stage(channels: int, image_size: int, with_loss: bool) -> dict:
    component = zoo.kl_f4(with_loss=with_loss)
    # 8 groups: at 32-64 channels the reference's 32 groups normalise each channel alone and the
    # autoencoder takes thousands of steps to learn absolute colours.
    component["params"]["ddconfig"].update(ch=channels, ch_mult=[1, 2, 2], num_res_blocks=1, resolution=image_size,
                                           num_groups=8)
    if with_loss:
        # Flat-coloured shapes need neither LPIPS nor the GAN term. Squared errors, not the reference's
        # L1: L1 pushes every pixel equally and leaves a wrong colour on a few pixels (the shape) for
        # last; at 600 steps the checker accepts 89% of L2 reconstructions vs 36% of L1 ones.
        component["params"]["lossconfig"] = {
            "target": "ldm.modules.losses.LPIPSWithDiscriminator",
            "params": {"disc_start": 1, "kl_weight": 1.0e-6, "disc_factor": 0.0, "perceptual_weight": 0.0,
                       "disc_num_layers": 2, "pixel_loss": "l2"}}
    return component


def _text_stage(width: int) -> dict:
    return zoo.bert_embedder(n_embed=width, n_layer=2, vocab_size=len(VOCABULARY), max_seq_len=MAX_TOKENS)


def _diffusion_model(first_stage: dict, unet: dict, width: int, latent_size: int, channels: int, scale_by_std: bool):
    return zoo.latent_diffusion(
        first_stage, unet, zoo.released("", "", "text-to-image on the built-in shapes", repo="ldm-jax"),
        cond_stage=_text_stage(width), linear_start=0.0015, linear_end=0.0195, timesteps=1000,
        first_stage_key="image", cond_stage_key="caption", image_size=latent_size, channels=channels,
        cond_stage_trainable=True, conditioning_key="crossattn", scale_by_std=scale_by_std, use_ema=True)


def _run(config, *, steps: int, batch_size: int, learning_rate: float, image_size: int,
         task: str = "image", log_every: int = 50) -> ml_collections.ConfigDict:
    data = {"name": "builtin", "num_records": 8192, "image_size": image_size, "task": task}
    if task == "caption":
        data.update(tokenizer_kind="bert", max_length=MAX_TOKENS, tokenizer="")  # the demo writes vocab.txt
    train = {"log_every_steps": log_every, "image_every_steps": 0}
    diffusion = "unet" in config.model
    if diffusion:
        train["uncond_tokens"] = [VOCABULARY.index("[CLS]"), VOCABULARY.index("[SEP]")] + [0] * (MAX_TOKENS - 2)
        # Min-SNR-5 weights: the effort goes to the noisy steps that decide shape and colour.
        train["snr_gamma"] = 5.0
    config = zoo.training(config, steps=steps, batch_size=batch_size, learning_rate=learning_rate,
                          cond_drop_prob=0.1 if diffusion else 0.0, checkpoint_every=steps, data=data,
                          train=train)
    if diffusion:
        config.ema = {"decay": 0.995}  # a short run: a long average would still hold the early weights
    else:  # Adam's usual betas, not the reference's GAN betas (0.5, 0.9): there is no GAN here
        config.optimizer.update(b1=0.9, b2=0.99)
    return config


def demo(image_size: int = 32, ae_channels: int = 32, width: int = 64, pixel_width: int = 32, ae_steps: int = 1500,
         ldm_steps: int = 2200, pixel_steps: int = 850, ae_batch: int = 8, batch: int = 16, samples_per_prompt: int = 8,
         samples_per_class: int = 12, num_heldout: int = 512, feature_net_steps: int = 400,
         sample_batch: int = 48, sampling_steps: int = 25, pixel_levels: int = 4) -> ml_collections.ConfigDict:
    """The demo at any size; `get_config` names the variants."""
    latent = image_size // 4
    autoencoder = zoo.autoencoder(_first_stage(ae_channels, image_size, with_loss=True),
                                  zoo.released("", "", "autoencoder of the built-in shapes", repo="ldm-jax"))
    # Both UNets: 8 norm groups (narrow models), and the prompt's mean embedding added to the timestep
    # embedding besides cross-attention (pooled_context): with Min-SNR weights, adherence went from
    # 25% to 46% at 1500 steps.
    narrow = dict(num_groups=8, pooled_context=True, use_spatial_transformer=True, transformer_depth=1,
                  context_dim=width, num_heads=4, num_res_blocks=1, in_channels=3, out_channels=3)
    ldm_unet = zoo.unet(image_size=latent, model_channels=width, attention_resolutions=[1, 2], channel_mult=[1, 2],
                        **narrow)
    pixel_unet = zoo.unet(image_size=image_size, model_channels=pixel_width, attention_resolutions=[4, 8],
                          channel_mult=[1, 2, 2, 4][:pixel_levels], **narrow)
    ldm = _diffusion_model(_first_stage(ae_channels, image_size, with_loss=False), ldm_unet, width, latent, 3,
                           scale_by_std=True)
    pixel = _diffusion_model(zoo.identity_first_stage(), pixel_unet, width, image_size, 3, scale_by_std=False)

    config = ml_collections.ConfigDict()
    config.seed = 0
    config.tokenizer = ""   # a BERT vocab.txt (file or folder); "": the built-in vocabulary (written to out/vocab.txt)
    # Shared by every stage. A folder (--data-dir) keeps 10% of each class out of training, for the
    # reconstruction, the feature net's accuracy and the FID reference.
    config.data = {"name": "builtin", "data_dir": "", "image_size": image_size, "backgrounds": BACKGROUNDS,
                   "heldout_fraction": 0.1}
    config.autoencoder = _run(autoencoder, steps=ae_steps, batch_size=ae_batch, learning_rate=1.0e-3,
                              image_size=image_size)
    config.ldm = _run(ldm, steps=ldm_steps, batch_size=batch, learning_rate=1.0e-3, image_size=image_size,
                      task="caption")
    config.pixel = _run(pixel, steps=pixel_steps, batch_size=batch, learning_rate=1.0e-3, image_size=image_size,
                        task="caption")
    # Every class prompt is drawn samples_per_class times per setting (scored by the checker, and the
    # FID sample set); the grids show the first samples_per_prompt of each.
    # Chosen on the trained default model with another seed (96 class-prompt samples each): guidance
    # 2.5 with eta 1 (fresh noise each step) 79% correct; guidance 3: 65% (eta 0) / 76% (eta 1);
    # guidance 5: 48%. Past ~3, guidance oversaturates this small model's samples.
    config.sampling = {"sampler": "ddim", "steps": sampling_steps, "eta": 1.0, "guidance_scale": 2.5,
                       "samples_per_prompt": samples_per_prompt, "samples_per_class": samples_per_class,
                       "class_prompts": list(CLASS_PROMPTS), "caption_prompts": list(CAPTION_PROMPTS),
                       "batch_size": sample_batch}
    config.evaluation = {"num_heldout": num_heldout, "feature_net_steps": feature_net_steps, "batch_size": 64}
    return config


def get_config(variant: str = "default") -> ml_collections.ConfigDict:
    variants = {
        "default": demo,
        "large": lambda: demo(image_size=64, ae_channels=64, width=128, pixel_width=64, ae_steps=5000, ldm_steps=20000,
                              pixel_steps=5000, ae_batch=16, batch=64, samples_per_prompt=16, samples_per_class=100,
                              num_heldout=2048, feature_net_steps=2000),
        "tiny": lambda: demo(image_size=16, ae_channels=32, width=32, ae_steps=2, ldm_steps=2, pixel_steps=2,
                             ae_batch=8, batch=8, samples_per_prompt=1, samples_per_class=1,
                             num_heldout=16, feature_net_steps=2, sample_batch=16, sampling_steps=4,
                             pixel_levels=2),  # half the pixel UNet's levels: less to compile in each test run
    }
    if variant not in variants:
        raise ValueError(f"unknown variant {variant!r} of demo; expected one of {sorted(variants)}")
    return variants[variant]()
