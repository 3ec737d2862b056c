"""The architecture registry: every name builds what its config says, and the input record holds."""

import pytest
import timm
import torch

from alan.errors import AlanError
from alan.models.backbones import ARCHS, create_backbone, create_vit
from alan.models.encoders import PAPER_ARCHS, TINY, create_encoder
from alan.models.registry import (IMAGENET_MEAN, IMAGENET_STD, ArchEntry, CNNConfig, PretrainedCfg, get_arch,
                                  list_archs, register_arch)


def test_list_archs_by_kind_tag_and_pattern():
    backbones, encoders = list_archs("backbone"), list_archs("encoder")
    assert not set(backbones) & set(encoders) and set(list_archs()) == set(backbones) | set(encoders)
    assert list(ARCHS) == backbones
    assert PAPER_ARCHS == ("vgg16", "densenet121") and TINY == ("vgg_tiny", "densenet_tiny")
    assert list_archs("backbone", pattern="vit_micro_*") == ["vit_micro_p8_112", "vit_micro_p8_64"]
    assert set(list_archs(tag="cpu")) <= set(backbones)


@pytest.mark.parametrize("name", list_archs("backbone"))
def test_every_backbone_builds_the_config_it_names(name):
    """Oracle: timm's own ViT with the registered overrides; the input record matches the config."""
    entry = get_arch(name, "backbone")
    cfg = entry.config
    vit = create_vit(name)
    assert vit.patch_embed.patch_size == (cfg.patch_size, cfg.patch_size)
    grid = (cfg.img_size // cfg.patch_size) ** 2
    if vit.pos_embed is not None:  # absolute position embeddings (DINOv3's rotary ones have none)
        assert vit.pos_embed.shape[1] == grid + 1
    assert vit.patch_embed.num_patches == grid and vit.embed_dim == cfg.embed_dim
    if cfg.depth is not None:
        assert len(vit.blocks) == cfg.depth
    else:
        assert len(vit.blocks) == len(timm.create_model(cfg.timm_name, pretrained=False).blocks)
    assert entry.pretrained_cfg.input_size == (3, cfg.img_size, cfg.img_size)
    bb = create_backbone(name)
    assert tuple(bb.config.mean) == entry.pretrained_cfg.mean and tuple(bb.config.std) == entry.pretrained_cfg.std


def test_imagenet_statistics_are_torchvision_s():
    """Oracle: timm's ImageNet constants (the torchvision values)."""
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    assert IMAGENET_MEAN == IMAGENET_DEFAULT_MEAN and IMAGENET_STD == IMAGENET_DEFAULT_STD
    assert get_arch("vgg16").pretrained_cfg == PretrainedCfg((3, 224, 224), IMAGENET_MEAN, IMAGENET_STD)


def test_encoder_entries_build_their_family():
    assert type(create_encoder("vgg_tiny", img_size=32).model).__name__ == "VGG"
    assert type(create_encoder("densenet_tiny", img_size=32).model).__name__ == "DenseNet"
    assert get_arch("densenet121").config == CNNConfig("timm", "densenet121")


def test_unknown_names_and_duplicates_are_one_line_errors():
    with pytest.raises(AlanError, match="unknown backbone architecture 'vgg16'; known: vit_small_p8_224"):
        get_arch("vgg16", "backbone")
    with pytest.raises(AlanError, match="unknown architecture 'nope'"):
        get_arch("nope")
    with pytest.raises(AlanError, match="already registered"):
        register_arch(ArchEntry("vgg16", "encoder", CNNConfig("timm", "vgg16"), PretrainedCfg((3, 224, 224))))
    with pytest.raises(AlanError, match="unknown backbone architecture"):
        create_backbone("nope")
    assert torch.is_tensor(create_encoder("resnet10t", img_size=32).mean)  # other timm names still work
