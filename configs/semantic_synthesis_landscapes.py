"""LDM-4 semantic synthesis of landscapes (Flickr-Landscapes segmentation maps; Sec. 4.3.2, Tab. 15).

Model: VQ-f4 first stage (z 64x64x3) + a 215M-parameter UNet (128 channels, mult 1,4,8, 8-head attention
in the middle block only: attention_resolutions 32, 16, 8 are never reached with three levels) taking
the latent concatenated with the semantic map, which a SpatialRescaler shrinks 4x (two bilinear
halvings) and maps from 182 one-hot COCO-Stuff classes to 3 channels with a 1x1 convolution.
Runs convolutionally beyond its training size (up to about 1024^2).

Variants (`get_config(arg)`):
  "256" (default)  semantic_synthesis256, trained on 256^2 crops:
                   `models/ldm/semantic_synthesis256/model.ckpt`
                   from https://ommer-lab.com/files/latent-diffusion/semantic_synthesis256.zip
  "512"            semantic_synthesis512, fine-tuned on 512^2 crops (latent 128^2):
                   `models/ldm/semantic_synthesis512/model.ckpt`
                   from https://ommer-lab.com/files/latent-diffusion/semantic_synthesis.zip
  "tiny"           width 32, 16x16 images and segmentation maps (4 classes) of the built-in dataset, random
                   first stage, 2 steps: the test variant
Reference YAML: CompVis/latent-diffusion `models/ldm/<variant>/config.yaml`.
Task: semantic image synthesis (segmentation map -> image).

Training: a TFDS ArrayRecord dataset of Flickr-Landscapes images whose records carry their "segmentation"
map of COCO-Stuff classes (written with `ldm_jax.data.arrayrecord.write_dataset`, named by data.tfds_name,
default "flickr_landscapes"), random crops, the frozen vq-f4 first stage; "512" fine-tunes the 256 model
on 512^2 crops.

  ldm-jax train --config configs/semantic_synthesis_landscapes.py --workdir /ckpt/landscapes \
      --config.data.data_dir=/data/tfds --config.pretrained.first_stage=models/first_stage_models/vq-f4/model.ckpt
  ldm-jax train --config configs/semantic_synthesis_landscapes.py:512 --workdir /ckpt/landscapes512 \
      --config.data.data_dir=/data/tfds --config.pretrained.model=models/ldm/semantic_synthesis256/model.ckpt
  ldm-jax train --config configs/semantic_synthesis_landscapes.py:tiny --workdir /tmp/landscapes_tiny

  ldm-jax sample --config configs/semantic_synthesis_landscapes.py:512 \
      --checkpoint models/ldm/semantic_synthesis512/model.ckpt --segmentation map.png --steps 100 --eta 1.0
"""
from ldm_jax import zoo

_VARIANTS = {
    "256": ("semantic_synthesis256", 64, "semantic_synthesis256.zip"),
    "512": ("semantic_synthesis512", 128, "semantic_synthesis.zip"),
}


def _model(arg: str):
    folder, latent_size, archive = _VARIANTS[arg]
    return zoo.latent_diffusion(
        zoo.vq_f4(with_loss=False),
        zoo.unet(image_size=latent_size, in_channels=6, out_channels=3, model_channels=128,
                 attention_resolutions=[32, 16, 8], num_res_blocks=2, channel_mult=[1, 4, 8], num_heads=8),
        zoo.released(f"models/ldm/{folder}/model.ckpt", f"models/ldm/{folder}/config.yaml",
                     "semantic image synthesis, landscapes",
                     url=f"https://ommer-lab.com/files/latent-diffusion/{archive}"),
        cond_stage=zoo.spatial_rescaler(n_stages=2, in_channels=182, out_channels=3),
        linear_start=0.0015, linear_end=0.0205, timesteps=1000, loss_type="l1", first_stage_key="image",
        cond_stage_key="segmentation", image_size=latent_size, channels=3, concat_mode=True,
        cond_stage_trainable=True, conditioning_key="concat", cond_stage_source="model")


def _tiny():
    config = _model("256")
    config.released = zoo.released("", "", "tiny semantic synthesis LDM for tests", repo="ldm-jax")
    model = config.model
    model.first_stage.params.ddconfig.update(ch=32, ch_mult=[1, 1, 2], num_res_blocks=1, resolution=16)
    model.unet.params.update(image_size=4, model_channels=32, attention_resolutions=[2], num_res_blocks=1,
                             channel_mult=[1, 2], num_heads=2)
    # The built-in maps: 0 background, 1 + the shape's index.
    model.cond_stage.params.in_channels = 4
    model.diffusion.image_size = 4
    return zoo.tiny_training(config, task="semantic", num_classes=4)


def get_config(arg: str | None = None):
    if arg == "tiny":
        return _tiny()
    if (arg or "256") not in _VARIANTS:
        raise ValueError(f"unknown semantic synthesis variant {arg!r}; expected one of {sorted(_VARIANTS) + ['tiny']}")
    config = _model(arg or "256")
    # The YAML: base_learning_rate 1e-6; Tab. 15's semantic column (which lists f=8; the release is f=4):
    # batch 48, 360k iterations, lr 4.8e-5 = 1e-6 x 48. The 512^2 fine-tuning (Sec. H) is published without
    # numbers: the same recipe on 512 crops, from the 256 model (pretrained.model), for 100k steps (ldm-jax's
    # choice). The reference's landscapes loader is not public: random crops, as its other training sets.
    data = {"name": "tfds", "tfds_name": "flickr_landscapes", "data_dir": "", "image_size": 256,
            "random_crop": True, "task": "semantic", "num_classes": 182}
    if arg == "512":
        return zoo.training(config, steps=100_000, batch_size=48, base_learning_rate=1.0e-6,
                            data={**data, "image_size": 512},
                            pretrained={"model": "models/ldm/semantic_synthesis256/model.ckpt"})
    return zoo.training(config, steps=360_000, batch_size=48, base_learning_rate=1.0e-6, data=data,
                        pretrained={"first_stage": "models/first_stage_models/vq-f4/model.ckpt"})
