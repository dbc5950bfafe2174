"""Reference YAML configs <-> our configs."""
import pytest
import yaml

from ldm_jax.convert import reference_config
from ldm_jax.convert.reference_config import ReferenceConfigError


def _full(compvis_fixtures) -> dict:
    return yaml.safe_load((compvis_fixtures / "full_ckpt.yaml").read_text())


def test_first_stage_only_config(compvis_fixtures):
    config = reference_config.read_reference_yaml(compvis_fixtures / "ae_vq.yaml")
    assert set(config.model) == {"first_stage"}
    assert config.model.first_stage.kind == "vq" and config.model.first_stage.params.n_embed == 128
    assert config.model.first_stage.params.ddconfig.ch_mult == (1, 1, 1)


@pytest.mark.parametrize("cond_stage, source", [("__is_unconditional__", "none"),
                                                 ("__is_first_stage__", "first_stage"),
                                                 ({"target": "torch.nn.Identity"}, "identity")])
def test_cond_stage_without_a_module(compvis_fixtures, cond_stage, source):
    document = _full(compvis_fixtures)
    document["model"]["params"]["cond_stage_config"] = cond_stage
    config = reference_config.config_from_reference(document)
    assert "cond_stage" not in config.model and config.model.diffusion.cond_stage_source == source
    again = reference_config.config_from_reference(reference_config.to_reference_document(config))
    assert again.model.to_dict() == config.model.to_dict()


@pytest.mark.parametrize("params, key", [({"concat_mode": True}, "concat"), ({}, "concat"),
                                         ({"concat_mode": False}, "crossattn"),
                                         ({"concat_mode": True, "conditioning_key": "crossattn"}, "crossattn"),
                                         ({"cond_stage_config": "__is_unconditional__"}, "none")])
def test_conditioning_key_defaults_as_the_reference_latent_diffusion(compvis_fixtures, params, key):
    """Without conditioning_key the reference LatentDiffusion takes "concat" if `concat_mode` (default
    True, as bsr_sr, semantic_synthesis and inpainting_big leave it) else "crossattn"; None if unconditional."""
    document = _full(compvis_fixtures)
    del document["model"]["params"]["conditioning_key"]
    document["model"]["params"].update(params)
    config = reference_config.config_from_reference(document, base_dir=compvis_fixtures)
    assert config.model.diffusion.conditioning_key == key


def test_document_round_trip(compvis_fixtures):
    config = reference_config.read_reference_yaml(compvis_fixtures / "full_ckpt.yaml")
    written = yaml.safe_load(yaml.safe_dump(reference_config.to_reference_document(config)))
    assert reference_config.config_from_reference(written).model.to_dict() == config.model.to_dict()


def test_bad_configs_are_named(compvis_fixtures, tmp_path):
    document = _full(compvis_fixtures)
    document["model"]["params"]["unet_config"]["target"] = "ldm.modules.diffusionmodules.model.Nonsense"
    with pytest.raises(ReferenceConfigError, match="unet_config.target: .*Nonsense"):
        reference_config.config_from_reference(document)
    document = _full(compvis_fixtures)
    del document["model"]["params"]["first_stage_config"]
    with pytest.raises(ReferenceConfigError, match="lacks first_stage_config"):
        reference_config.config_from_reference(document)
    document = _full(compvis_fixtures)
    document["model"]["params"]["cond_stage_config"] = "__is_everything__"
    with pytest.raises(ReferenceConfigError, match="__is_everything__"):
        reference_config.config_from_reference(document)
    (tmp_path / "broken.yaml").write_text("model: [unclosed")
    with pytest.raises(ReferenceConfigError, match="broken.yaml"):
        reference_config.read_reference_yaml(tmp_path / "broken.yaml")
    with pytest.raises(ReferenceConfigError, match="unknown CLIP text model"):
        reference_config.config_from_reference(_full(compvis_fixtures), base_dir=tmp_path)


def test_unknown_diffusion_params_warn(compvis_fixtures):
    document = _full(compvis_fixtures)
    document["model"]["params"]["brand_new_setting"] = 3
    with pytest.warns(UserWarning, match="brand_new_setting"):
        reference_config.config_from_reference(document, base_dir=compvis_fixtures)
