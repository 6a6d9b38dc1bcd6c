"""Tests of the model zoo: RobustBench key/numerical equivalence, registry behaviour, errors, FLOPs.

Full-size models are compared against RobustBench's own zoo constructors once per dataset
(module-scoped fixtures, batch 2, no_grad); shape checks of full-size names run on the meta device.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from advtrain.errors import InputError, UnknownNameError
from advtrain.models.convert import load_weights
from advtrain.models import count_flops, create_model, get_spec, list_models
from robustbench.model_zoo import cifar10 as rb_c10, cifar100 as rb_c100  # a hard dependency: no skip
from robustbench.model_zoo.architectures import resnet as rb_resnet
from robustbench.model_zoo.architectures.wide_resnet import WideResNet as RBWideResNet
from robustbench.model_zoo.enums import ThreatModel

ZOO = {"cifar10": rb_c10.cifar_10_models[ThreatModel.Linf], "cifar100": rb_c100.cifar_100_models[ThreatModel.Linf]}
NUM_CLASSES = {"cifar10": 10, "cifar100": 100}


def _randomise_bn(model: nn.Module, seed: int = 1) -> None:
    """Non-trivial BN statistics and affine parameters, so eval-mode logits depend on every buffer."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
            m.weight.data.copy_(1 + 0.1 * torch.randn(m.weight.shape, generator=gen))
            m.bias.data.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
        elif isinstance(m, nn.Linear) and m.bias is not None:
            m.bias.data.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))


def _assert_equivalent(ours: nn.Module, theirs: nn.Module, x: torch.Tensor) -> None:
    """Same keys and shapes; our weights load strictly into theirs; identical eval-mode logits."""
    sd_ours, sd_theirs = ours.state_dict(), theirs.state_dict()
    assert list(sd_ours) == list(sd_theirs)
    assert {k: tuple(v.shape) for k, v in sd_ours.items()} == {k: tuple(v.shape) for k, v in sd_theirs.items()}
    _randomise_bn(ours)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    ours.eval(), theirs.eval()
    with torch.no_grad():
        a, b = ours(x), theirs(x)
    assert a.shape == b.shape == (x.shape[0], ours.state_dict()[list(sd_ours)[-1]].shape[0])
    assert a.abs().max() > 0 and torch.isfinite(a).all()
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- RobustBench equivalence
@pytest.fixture(scope="module", params=["cifar10", "cifar100"])
def dataset(request):
    return request.param


@pytest.mark.slow  # four full-size models (~20-40 s on 2 cores); still run by default
@pytest.mark.parametrize("arch,zoo_name", [("wrn-34-10", "Cui2023Decoupled_WRN-34-10"),
                                           ("wrn-28-10-silu", "Cui2023Decoupled_WRN-28-10")])
def test_matches_robustbench_zoo_entry(arch, zoo_name, dataset):
    torch.manual_seed(0)
    ours = create_model(arch, dataset=dataset)
    theirs = ZOO[dataset][zoo_name]["model"]()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    _assert_equivalent(ours, theirs, x)
    assert ours.arch_name == arch and ours.num_classes == NUM_CLASSES[dataset]
    if arch.endswith("-silu"):  # normalisation statistics are configuration, never saved
        assert "mean" not in ours.state_dict() and torch.equal(ours.mean, theirs.mean)
        assert torch.equal(ours.std, theirs.std)
        assert all(m.momentum == 0.01 for m in ours.modules() if isinstance(m, nn.BatchNorm2d))
    del ours, theirs


def test_preact_resnet18_matches_robustbench_layout():
    ours = create_model("preact-resnet-18", num_classes=10)
    theirs = rb_resnet.PreActResNet(rb_resnet.PreActBlock, [2, 2, 2, 2], bn_before_fc=True, out_shortcut=True)
    _assert_equivalent(ours, theirs, torch.rand(2, 3, 32, 32))
    assert create_model("preact-resnet-18", width=8).linear.in_features == 64


def test_resnet18_keys_and_lbgat_strides():
    ours = create_model("resnet-18", dataset="cifar100")
    reference = rb_resnet.ResNet(rb_resnet.BasicBlock, [2, 2, 2, 2], num_classes=100)
    assert list(ours.state_dict()) == list(reference.state_dict())
    assert ours.layer2[0].conv1.stride == (1, 1) and ours.layer3[0].conv1.stride == (2, 2)  # LBGAT ResNet18_cifar
    # with RobustBench's strides it is numerically RobustBench's ResNet18
    kuangliu = get_spec("resnet-18").builder(num_classes=100, strides=(1, 2, 2, 2))
    _assert_equivalent(kuangliu, reference, torch.rand(2, 3, 32, 32))


@pytest.mark.parametrize("depth,width", [(10, 1), (16, 2)])
@pytest.mark.parametrize("sub_block1", [False, True])
def test_small_wrn_matches_robustbench_wideresnet(depth, width, sub_block1):
    ours = create_model(f"wrn-{depth}-{width}", dataset="cifar100", sub_block1=sub_block1)
    theirs = RBWideResNet(depth=depth, widen_factor=width, num_classes=100, sub_block1=sub_block1)
    _assert_equivalent(ours, theirs, torch.rand(2, 3, 32, 32))
    assert any(k.startswith("sub_block1.") for k in ours.state_dict()) == sub_block1


@pytest.mark.parametrize("name,rb_width", [("wrn-34-20", 20), ("wrn-28-10", 10)])
def test_full_size_wrn_keys_on_meta(name, rb_width):
    depth = int(name.split("-")[1])
    with torch.device("meta"):
        ours = create_model(name, dataset="cifar10")
        theirs = RBWideResNet(depth=depth, widen_factor=rb_width, num_classes=10)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}


def test_wrn_init_follows_spec():
    model = create_model("wrn-16-4", dataset="cifar10")
    conv = model.block2.layer[0].conv1  # 3x3, C_out = 128: std sqrt(2 / (9 * 128))
    expected = (2.0 / (9 * conv.out_channels)) ** 0.5
    assert abs(conv.weight.std().item() - expected) / expected < 0.05
    assert torch.equal(model.fc.bias, torch.zeros_like(model.fc.bias))
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in model.modules() if isinstance(m, nn.BatchNorm2d))


# --------------------------------------------------------------------------- registry
SMALL = {"wrn-34-10": ("wrn-10-1", {}), "wrn-34-20": ("wrn-10-2", {}), "wrn-28-10": ("wrn-16-1", {}),
         "wrn-28-10-silu": ("wrn-10-1-silu", {}), "preact-resnet-18": ("preact-resnet-18", {"width": 8}),
         "resnet-18": ("resnet-18", {"width": 8})}


def test_small_variants_cover_every_registry_name():
    assert sorted(SMALL) == list_models()


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_name_gives_logits(name):
    with torch.device("meta"):  # full size, shape only
        for dataset, n in NUM_CLASSES.items():
            big = create_model(name, dataset=dataset)
            assert big(torch.empty(3, 3, 32, 32)).shape == (3, n)
    assert big.arch_name == name
    small_name, small_kwargs = SMALL[name]
    small = create_model(small_name, dataset="cifar100", **small_kwargs)  # real forward + backward, small variant
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    logits = small(x)
    assert logits.shape == (2, 100) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_parsed_names_are_canonical_and_sized():
    model = create_model("WRN-16-2-SiLU", dataset="cifar10")
    assert model.arch_name == "wrn-16-2-silu" and type(model).__name__ == "DMWideResNet"
    assert model.logits.in_features == 128 and len(model.layer[0].block) == 2
    relu = create_model("wrn-22-3", num_classes=7)
    assert relu.fc.out_features == 7 and relu.fc.in_features == 192 and len(relu.block1.layer) == 3


@pytest.mark.parametrize("layers, filters", [(1, 4), (1, 16), (2, 3)])
def test_gradalign_cnn_is_conv_relu_blocks_then_one_linear_layer(layers, filters):
    """cnn-<layers>x<filters>: GradAlign's models.CNN (3x3 convolutions, stride 1, padding 1, bias, a
    ReLU each, at 32x32; flatten; one linear layer), checked against that definition in float64."""
    model = create_model(f"CNN-{layers}x{filters}", dataset="cifar100").double()
    assert model.arch_name == f"cnn-{layers}x{filters}" and model.num_classes == 100
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == (3 * 9 * filters + filters + (layers - 1) * (filters * 9 * filters + filters)
                        + filters * 32 * 32 * 100 + 100)
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    h = x
    for conv in convs:
        h = torch.relu(torch.nn.functional.conv2d(h, conv.weight, conv.bias, stride=1, padding=1))
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(convs) == layers and len(linear) == 1
    want = h.reshape(2, -1) @ linear[0].weight.T + linear[0].bias
    torch.testing.assert_close(model(x), want, rtol=1e-12, atol=1e-12)
    with pytest.raises(InputError, match="layers >= 1"):
        create_model("cnn-0x4")
    with pytest.raises(InputError, match="filters >= 1"):
        create_model("cnn-1x0")


def test_num_classes_from_dataset_and_defaults():
    assert create_model("wrn-10-1", dataset="cifar100").fc.out_features == 100
    assert create_model("wrn-10-1", dataset="CIFAR10", num_classes=10).fc.out_features == 10
    assert create_model("wrn-10-1").fc.out_features == 10
    # normalising models without a dataset take the CIFAR statistics of their class count
    from advtrain.models.dm_wideresnet import CIFAR100_MEAN
    model = create_model("wrn-10-1-silu", num_classes=100)
    assert torch.allclose(model.mean.flatten(), torch.tensor(CIFAR100_MEAN))


def test_inconsistent_dataset_and_num_classes_refused():
    with pytest.raises(InputError, match="num_classes=100.*cifar10"):
        create_model("wrn-10-1", dataset="cifar10", num_classes=100)
    with pytest.raises(InputError, match="positive integer"):
        create_model("wrn-10-1", num_classes=0)
    with pytest.raises(InputError, match="dataset="):
        create_model("wrn-10-1-silu", num_classes=7)
    assert create_model("wrn-10-1-silu", num_classes=7, mean=(0.5,) * 3, std=(0.25,) * 3).std.max() == 0.25


def test_unknown_names_have_close_matches():
    with pytest.raises(UnknownNameError) as info:
        create_model("wrn34-10")
    msg = str(info.value)
    assert "unknown model 'wrn34-10'" in msg and "did you mean 'wrn-34-10'" in msg and "resnet-18" in msg
    with pytest.raises(UnknownNameError, match="did you mean 'cifar100'"):
        create_model("wrn-10-1", dataset="cifar-100")
    with pytest.raises(InputError, match=r"\(depth-4\) % 6"):
        create_model("wrn-12-2")
    with pytest.raises(InputError, match="does not take option.*foo"):
        create_model("wrn-10-1", foo=1)
    with pytest.raises(InputError, match="depth"):
        create_model("wrn-10-1", depth=34)  # the name fixes the architecture


def test_list_models_pattern():
    assert list_models("wrn-*") == ["wrn-28-10", "wrn-28-10-silu", "wrn-34-10", "wrn-34-20"]
    assert "resnet-18" in list_models()


def test_sub_block1_checkpoint_loads_into_model_without_it():
    src = create_model("wrn-10-1", dataset="cifar10", sub_block1=True)
    _randomise_bn(src)
    sd = {"state_dict": {"module." + k: v for k, v in src.state_dict().items()}}
    dst = load_weights(create_model("wrn-10-1", dataset="cifar10"), sd)
    src.eval(), dst.eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(src(x), dst(x))


# --------------------------------------------------------------------------- FLOPs
def test_count_flops_matches_hand_count():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2),
                          nn.Flatten(), nn.Linear(6 * 16 * 16, 10))
    expected = 2 * (32 * 32 * 4 * 3 * 9 + 16 * 16 * 6 * 2 * 9 + 6 * 16 * 16 * 10)
    assert count_flops(model) == expected
    assert count_flops(model, (5, 3, 32, 32)) == 5 * expected
    model.train()
    count_flops(model)
    assert model.training and not any(m._forward_hooks for m in model.modules())


def test_count_flops_orders_models():
    small, wide = create_model("wrn-10-1"), create_model("wrn-10-2")
    assert 3 * count_flops(small) < count_flops(wide) < 5 * count_flops(small)  # width x2 -> ~x4 conv FLOPs
