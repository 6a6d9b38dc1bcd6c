"""revisiting-at's model options: the ConvStem (model.conv_stem) against the source's layer lists, typed
in here from nmndeep/revisiting-at @ d7166c0 utils_architecture.py: ConvBlock1(48) for ConvNeXt-T
(:198-217, :241-244), ConvBlock(48, end_siz=8) for ViT-S (:120-144, :271-275), LayerNorm channels_first
(:57-82); and model.normalize false (model.add_normalization 0: the network sees [0, 1] pixels)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from advtrain import config as C
from advtrain.errors import InputError
from advtrain.models import create_model
from advtrain.models.conv_stem import ConvStem, convnext_widths, vit_widths

#: (in, out, kernel, stride) of each convolution, from the source; each 3x3 conv is followed by a
#: LayerNorm(out) (weight + bias) and a GELU; every conv has a bias
CONVNEXT_T = [(3, 48, 3, 2), (48, 96, 3, 2)]
VIT_S = [(3, 48, 3, 2), (48, 96, 3, 2), (96, 192, 3, 2), (192, 384, 3, 2), (384, 384, 1, 1)]


def stem_params(convs):
    """Parameters of the source's block: conv weights + biases, LayerNorm weight + bias after 3x3s."""
    return sum(i * o * k * k + o + (2 * o if k == 3 else 0) for i, o, k, _ in convs)


def reference_stem(x, stem, convs):
    """The source's forward in float64 with the module's own weights: conv, then for 3x3 convs
    (x - mean_c) / sqrt(var_c + 1e-6) * w + b over the channels, then exact GELU."""
    layers = list(stem.stem)
    convs_mod = [m for m in layers if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in layers if type(m).__name__ == "ChannelsFirstLayerNorm"]
    x = x.double()
    for j, (_i, _o, k, s) in enumerate(convs):
        c = convs_mod[j]
        x = F.conv2d(x, c.weight.double(), c.bias.double(), stride=s, padding=k // 2)
        if k == 3:
            n = norms[j]
            u = x.mean(1, keepdim=True)
            v = ((x - u) ** 2).mean(1, keepdim=True)
            x = (x - u) / torch.sqrt(v + 1e-6) * n.weight.double().view(1, -1, 1, 1) + n.bias.double().view(1, -1, 1, 1)
            x = 0.5 * x * (1 + torch.erf(x / 2 ** 0.5))
    return x


@pytest.mark.parametrize("widths,proj,convs,grid", [
    (convnext_widths(96), None, CONVNEXT_T, (96, 56, 56)),  # ConvNeXt-T's first stage: 96 channels
    (vit_widths(384), 384, VIT_S, (384, 14, 14))])  # ViT-S: embedding width 384
def test_conv_stem_is_the_sources_block(widths, proj, convs, grid):
    stem = ConvStem(widths, proj=proj).eval()
    assert sum(p.numel() for p in stem.parameters()) == stem_params(convs)
    got = [(m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0]) for m in stem.modules()
           if isinstance(m, torch.nn.Conv2d)]
    assert got == convs
    assert all(m.padding[0] == m.kernel_size[0] // 2 and m.bias is not None for m in stem.modules()
               if isinstance(m, torch.nn.Conv2d))
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.nn.init.normal_(stem.stem[1].weight)  # the LayerNorm affine is applied (not only at init)
        out = stem(x)
        assert out.shape == (2, *grid)
        assert torch.allclose(out.double(), reference_stem(x, stem, convs), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch,where,convs", [
    # convnext_atto: first stage 40 channels -> 20, 40; test_vit: width 64, 16x16 patches -> 8..64 + 1x1
    ("timm:convnext_atto", "stem", [(3, 20, 3, 2), (20, 40, 3, 2)]),
    ("timm:test_vit", "patch_embed.proj", [(3, 8, 3, 2), (8, 16, 3, 2), (16, 32, 3, 2), (32, 64, 3, 2),
                                           (64, 64, 1, 1)])])
def test_conv_stem_replaces_the_timm_stem(arch, where, convs):
    plain = create_model(arch, num_classes=3, image_size=32)
    model = create_model(arch, num_classes=3, image_size=32, conv_stem=True)
    stem = model.model.get_submodule(where)
    assert type(stem).__name__ == "ConvStem"
    assert [(m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0]) for m in stem.modules()
            if isinstance(m, torch.nn.Conv2d)] == convs
    old = sum(p.numel() for p in plain.model.get_submodule(where).parameters())
    assert sum(p.numel() for p in model.parameters()) == \
        sum(p.numel() for p in plain.parameters()) - old + stem_params(convs)
    # the source's state-dict keys: the block's layers under .stem
    assert f"model.{where}.stem.0.weight" in model.state_dict() and f"model.{where}.stem.1.weight" in model.state_dict()


def test_conv_stem_tiny_models_train_and_round_trip_their_options(tmp_path):
    from advtrain.models.timm_models import build_options, recorded_options

    for arch, size in (("timm:convnext_atto", 32), ("timm:test_vit", 32)):
        model = create_model(arch, num_classes=3, image_size=size, conv_stem=True)
        x = torch.rand(2, 3, size, size, requires_grad=True)
        out = model(x)
        assert out.shape == (2, 3)
        out.sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()
        assert build_options(model) == {"num_classes": 3, "image_size": size, "conv_stem": True}
        rebuilt = create_model(arch, **build_options(model))
        rebuilt.load_state_dict(model.state_dict(), strict=True)
    ckpt = {"arch": "timm:test_vit", "num_classes": 3,
            "config": {"data": {"image_size": 32}, "model": {"conv_stem": True}}}
    assert recorded_options(ckpt) == {"num_classes": 3, "image_size": 32, "conv_stem": True}


def test_conv_stem_key_is_checked_at_load():
    cfg = C.from_dict({"data": {"dataset": "imagefolder", "num_classes": 3},
                       "model": {"arch": "timm:convnext_atto", "conv_stem": True},
                       "objective": {"name": "pgd_at"}})
    assert C.resolve(cfg)["model"]["conv_stem"] is True  # recorded in config.yaml
    for model, match in [({"arch": "wrn-16-2", "conv_stem": True}, "timm:<name> architectures only"),
                         ({"arch": "timm:resnet10t", "conv_stem": True}, "ConvNeXt and ViT")]:
        with pytest.raises(InputError, match=match):
            C.from_dict({"data": {"dataset": "imagefolder", "num_classes": 3}, "model": model,
                         "objective": {"name": "pgd_at"}})
    from timm.models.vision_transformer import VisionTransformer

    from advtrain.models.conv_stem import add_conv_stem

    vit8 = VisionTransformer(img_size=32, patch_size=8, embed_dim=16, depth=1, num_heads=2, num_classes=3)
    with pytest.raises(InputError, match="16x16 patches"):  # the patch size: when it is built
        add_conv_stem(vit8, "vit_small_patch8_224")
    with pytest.raises(InputError, match="true or false"):
        create_model("timm:test_vit", num_classes=3, image_size=32, conv_stem="yes")


def test_normalize_false_feeds_the_network_the_pixels():
    """revisiting-at's model.add_normalization 0 (run_train.sh:12; main.py:826-828 adds the
    ImageNormalizer only when it is 1): the network sees the [0, 1] image itself."""
    from advtrain.models.timm_models import build_options, recorded_options

    model = create_model("timm:test_vit", num_classes=3, image_size=32, normalize=False).eval()
    normed = create_model("timm:test_vit", num_classes=3, image_size=32).eval()
    normed.load_state_dict(model.state_dict())
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(model(x), model.model(x), atol=1e-6, rtol=0)
        mean = torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1)  # test_vit's pretrained_cfg: 0.5 / 0.5
        assert torch.allclose(normed(x), model.model((x - mean) / 0.5), atol=1e-5, rtol=0)
        assert not torch.allclose(model(x), normed(x), atol=1e-3)
    options = build_options(model)
    assert options == {"num_classes": 3, "image_size": 32, "normalize": False}
    rebuilt = create_model("timm:test_vit", **options).eval()
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))
    ckpt = {"arch": "timm:test_vit", "num_classes": 3, "config": {"data": {"image_size": 32},
                                                                   "model": {"normalize": False}}}
    assert recorded_options(ckpt)["normalize"] is False
    cfg = C.from_dict({"data": {"dataset": "imagefolder", "num_classes": 3},
                       "model": {"arch": "timm:test_vit", "normalize": False}, "objective": {"name": "pgd_at"}})
    assert C.resolve(cfg)["model"]["normalize"] is False
    with pytest.raises(InputError, match="model.normalize' applies to timm"):
        C.from_dict({"model": {"arch": "wrn-16-2", "normalize": False}, "objective": {"name": "pgd_at"}})
