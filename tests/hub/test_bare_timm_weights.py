"""Teachers and students from the ImageNet weights users already have: a bare network's state_dict
in timm's / torchvision's format (keys ``conv1.weight``..., torchvision's early files without
BatchNorm counters) loads into ``timm:<arch>`` through the one model-file loader."""
from __future__ import annotations

import pytest
import torch

from advtrain.errors import CheckpointError
from advtrain.hub.loader import load_model_file


def test_torchvision_style_resnet_file_without_bn_counters_loads_as_a_timm_teacher(tmp_path):
    import timm

    torch.manual_seed(0)  # timm's resnet18 has torchvision's keys (conv1, bn1, layer1.0..., fc)
    net = timm.create_model("resnet18", pretrained=False, num_classes=1000).eval()
    with torch.no_grad():  # non-trivial running statistics: a wrong mapping would show
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "resnet18-v1.pth"
    torch.save(state, path)
    loaded = load_model_file(str(path), dataset="imagenet", arch="timm:resnet18").model
    assert "conv1.weight" in state and "fc.bias" in state
    x = torch.rand(2, 3, 64, 64)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net((x - mean) / std), rtol=1e-5, atol=1e-5)
    with pytest.raises(CheckpointError, match="does not fit") as info:
        load_model_file(str(path), dataset="imagenet", arch="timm:resnet10t")  # another layout
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("arch", ["timm:convnext_atto", "timm:vit_tiny_patch16_224"])
def test_models_whose_constructor_cannot_run_on_the_meta_device_load(tmp_path, arch):
    """timm's ConvNeXt and ViT read their drop-path rates with .item()/.tolist() while they build,
    which fails on the meta device: the loader checks them on a CPU build instead, still strictly."""
    from advtrain.hub.loader import skeleton
    from advtrain.models import create_model

    with pytest.raises((RuntimeError, NotImplementedError)):
        with torch.device("meta"):
            create_model(arch, dataset="imagenet", num_classes=1000)
    torch.manual_seed(0)
    net = create_model(arch, dataset="imagenet", num_classes=1000).eval()
    path = tmp_path / "net.pt"
    torch.save(net.state_dict(), path)
    loaded = load_model_file(str(path), dataset="imagenet", arch=arch).model
    x = torch.rand(2, 3, 32, 32) if "convnext" in arch else torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=0)
    assert skeleton(arch, "imagenet", 1000) is not None  # what the checkpoint reader checks against
    bad = {k: v for k, v in net.state_dict().items() if "head" not in k}
    torch.save(bad, path)
    with pytest.raises(CheckpointError, match="does not fit|missing") as info:
        load_model_file(str(path), dataset="imagenet", arch=arch)
    assert "\n" not in str(info.value)
