"""An export of a timm model built with revisiting-at's options (ConvStem, [0, 1] inputs) records
them in its sidecar and loads back, through advtrain's loader and robustbench.utils.load_model,
with identical logits; the sidecar's options are checked field by field."""
from __future__ import annotations

import json

import pytest
import torch

from advtrain.errors import InputError
from advtrain.hub import export
from advtrain.hub.loader import load_zoo
from advtrain.models import create_model


@pytest.mark.parametrize("options", [{"conv_stem": True}, {"normalize": False}],
                         ids=["conv_stem", "no_normalize"])
def test_options_travel_with_the_export(tmp_path, options):
    from robustbench.utils import load_model

    torch.manual_seed(0)
    net = create_model("timm:convnext_atto", dataset="imagenet", num_classes=1000, image_size=32,
                       **options).eval()
    export.to_robustbench(net, "Tiny2026_Opt", "imagenet", model_dir=tmp_path)
    side = tmp_path / "imagenet" / "Linf" / "Tiny2026_Opt.advtrain.json"
    assert json.loads(side.read_text())["options"] == {"num_classes": 1000, "image_size": 32, **options}
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ours = load_zoo("Tiny2026_Opt", dataset="imagenet", model_dir=tmp_path).model
    export.register_model_dir(tmp_path)
    theirs = load_model("Tiny2026_Opt", model_dir=str(tmp_path), dataset="imagenet",
                        threat_model="Linf").eval()
    with torch.no_grad():
        want = net(x)
        assert torch.equal(ours(x), want) and torch.equal(theirs(x), want)
    info = json.loads(side.read_text())
    info["options"]["conv_stem"] = "yes"  # a flag that is not a boolean
    side.write_text(json.dumps(info))
    with pytest.raises(InputError, match="true/false") as e:
        load_zoo("Tiny2026_Opt", dataset="imagenet", model_dir=tmp_path)
    assert "\n" not in str(e.value)
