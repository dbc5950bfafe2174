"""ldm_jax.zoo: the component dicts and the config assembly checks."""
import pytest

from ldm_jax import zoo

FIRST_STAGES = [zoo.kl_f4, zoo.kl_f8, zoo.kl_f16, zoo.kl_f32, zoo.vq_f4, zoo.vq_f4_noattn, zoo.vq_f8,
                zoo.vq_f8_n256, zoo.vq_f16]


@pytest.mark.parametrize("make", FIRST_STAGES, ids=lambda make: make.__name__)
def test_first_stage_downsampling_and_loss_switch(make):
    with_loss, without = make(), make(with_loss=False)
    assert with_loss["params"].pop("lossconfig")["params"]
    assert with_loss == without
    ddconfig = without["params"]["ddconfig"]
    factor = int(make.__name__.split("_")[1][1:])
    assert 2 ** (len(ddconfig["ch_mult"]) - 1) == factor
    assert ddconfig["z_channels"] == without["params"]["embed_dim"]
    assert ddconfig["double_z"] == (without["kind"] == "autoencoder_kl")


def test_latent_diffusion_defaults_and_checks():
    release = zoo.released("model.ckpt", "config.yaml", "test")
    config = zoo.latent_diffusion(zoo.kl_f8(with_loss=False), zoo.sd_v1_unet(), release,
                                  cond_stage=zoo.clip_vit_l14(), conditioning_key="crossattn")
    assert config.model.diffusion.cond_stage_source == "model"
    assert config.model.diffusion.timesteps == 1000 and config.model.diffusion.parameterization == "eps"
    unconditional = zoo.latent_diffusion(zoo.vq_f4(), zoo.sd_v1_unet(), release)
    assert "cond_stage" not in unconditional.model
    assert unconditional.model.diffusion.conditioning_key == "none"
    with pytest.raises(ValueError, match="unknown diffusion settings \\['linear_stat'\\]"):
        zoo.latent_diffusion(zoo.vq_f4(), zoo.sd_v1_unet(), release, linear_stat=0.1)
    with pytest.raises(ValueError, match="conditioning_key must be one of"):
        zoo.latent_diffusion(zoo.vq_f4(), zoo.sd_v1_unet(), release, conditioning_key=None)
    with pytest.raises(ValueError, match="cond_stage_source must be 'model'.*no cond_stage"):
        zoo.latent_diffusion(zoo.vq_f4(), zoo.sd_v1_unet(), release, cond_stage_source="model")
    with pytest.raises(ValueError, match="cond_stage_source must be one of"):
        zoo.latent_diffusion(zoo.vq_f4(), zoo.sd_v1_unet(), release, cond_stage_source="text")


def test_unet_params_are_yaml_like():
    params = zoo.unet(image_size=8, channel_mult=(1, 2), attention_resolutions=(2,))["params"]
    assert params["channel_mult"] == [1, 2] and params["attention_resolutions"] == [2]
    assert "use_fp16" not in zoo.sd_v2_unet(use_fp16=None)["params"]
    assert zoo.sd_v2_unet(in_channels=9)["params"]["in_channels"] == 9


def test_components_do_not_share_nested_dicts():
    """Each call builds fresh dicts: editing one config (as experiments do) leaves the others alone."""
    edited = zoo.kl_f4(with_loss=True)
    edited["params"]["lossconfig"]["params"]["kl_weight"] = 1.0
    assert zoo.kl_f8(with_loss=True)["params"]["lossconfig"]["params"]["kl_weight"] == 1.0e-6
