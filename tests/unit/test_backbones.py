"""The backbone contract over every backbone the configs name."""

from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO
from selfsup.backbones import Backbone, check_input_size
from selfsup.errors import ConfigError


def config_backbones() -> list[tuple[str, dict, int]]:
    """(name, kwargs, input size) of every model in configs/**/*.yaml."""
    found = {}
    for path in sorted(Path(REPO, "configs").rglob("*.yaml")):
        cfg = yaml.safe_load(path.read_text()) or {}
        args = (cfg.get("model") or {}).get("init_args") or {}
        if "backbone" not in args:
            continue
        kwargs = args.get("backbone_kwargs") or {}
        size = cfg["data"]["transform"]["init_args"]["size"]
        found[(args["backbone"], tuple(sorted(kwargs.items())), size)] = (
            args["backbone"],
            kwargs,
            size,
        )
    assert found, "no configs found"
    return list(found.values())


@pytest.mark.parametrize("name,kwargs,size", config_backbones(), ids=lambda v: str(v))
def test_config_backbones_give_pooled_features(name, kwargs, size):
    backbone = Backbone(name, **kwargs).eval()
    with torch.no_grad():
        feats = backbone(torch.randn(2, backbone.in_chans, size, size))
    assert feats.shape == (2, backbone.embed_dim)


@pytest.mark.parametrize("name,dim", [("resnet18", 512), ("resnet50", 2048)])
def test_resnets_with_and_without_cifar_stem(name, dim):
    plain = Backbone(name)
    cifar = Backbone(name, cifar_stem=True)
    assert plain.embed_dim == cifar.embed_dim == dim
    assert cifar.model.conv1.kernel_size == (3, 3) and cifar.model.conv1.stride == (1, 1)
    assert isinstance(cifar.model.maxpool, torch.nn.Identity)
    # A 32 px input keeps a 4x4 final map with the CIFAR stem (1x1 without).
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert cifar.model.forward_features(x).shape[-1] == 4
        assert plain.model.forward_features(x).shape[-1] == 1


@pytest.mark.parametrize("name,dim", [("vit_tiny", 192), ("vit_small", 384)])
def test_vits_any_size_patch_and_channels(name, dim):
    vit = Backbone(name, img_size=32, patch_size=4, in_chans=1).eval()
    assert vit.embed_dim == dim
    with torch.no_grad():
        assert vit(torch.randn(2, 1, 32, 32)).shape == (2, dim)
        # Other sizes (multiples of the patch): position embeddings interpolated.
        assert vit(torch.randn(2, 1, 48, 40)).shape == (2, dim)
        tokens = vit.forward_tokens(torch.randn(2, 1, 32, 32))
    assert tokens.shape == (2, 64, dim)


def test_vit_avg_pool_without_class_token_is_the_mean_of_patch_tokens():
    vit = Backbone("vit_tiny", img_size=32, patch_size=8, pool="avg", class_token=False).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(vit(x), vit.forward_tokens(x).mean(1), atol=1e-5)


def test_grayscale_resnet():
    r = Backbone("resnet18", in_chans=1, cifar_stem=True).eval()
    with torch.no_grad():
        assert r(torch.randn(2, 1, 28, 28)).shape == (2, 512)


@pytest.mark.parametrize("zero_init_last", [True, False])
def test_zero_init_last_starts_each_block_as_timm_does(zero_init_last):
    import timm

    def last_norms(model):
        return [block.bn2.weight for stage in (model.layer1, model.layer2, model.layer3,
                                               model.layer4) for block in stage]  # fmt: skip

    torch.manual_seed(0)
    ours = Backbone("resnet18", cifar_stem=True, zero_init_last=zero_init_last).model
    torch.manual_seed(0)
    reference = timm.create_model("resnet18", num_classes=0, zero_init_last=zero_init_last)
    assert len(last_norms(ours)) == 8
    for mine, theirs in zip(last_norms(ours), last_norms(reference), strict=True):
        assert torch.equal(mine, theirs)
        assert torch.all(mine == (0.0 if zero_init_last else 1.0))
    # only the starting weights differ: the state-dict keys and shapes are the same
    other = Backbone("resnet18", cifar_stem=True, zero_init_last=not zero_init_last).model
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in other.state_dict().items()
    }
    with pytest.raises(ConfigError, match="ResNets only"):
        Backbone("vit_tiny", img_size=32, patch_size=4, zero_init_last=False)


def test_bad_names_and_sizes_are_refused_with_the_fix():
    with pytest.raises(ConfigError, match="resnet18"):
        Backbone("resnet_18")
    with pytest.raises(ConfigError, match="patch size"):
        Backbone("vit_tiny", img_size=30, patch_size=4)
    with pytest.raises(ConfigError, match="cifar_stem"):
        check_input_size(Backbone("resnet18"), 16)
    with pytest.raises(TypeError, match="ViT"):
        Backbone("resnet18").forward_tokens(torch.randn(1, 3, 32, 32))


def test_resnet_weights_are_channels_last_and_compute_the_same_function():
    fast = Backbone("resnet18", img_size=32, cifar_stem=True)
    plain = Backbone("resnet18", img_size=32, cifar_stem=True, channels_last=False)
    plain.load_state_dict(fast.state_dict())  # same keys, values copied across layouts
    conv = fast.model.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert plain.model.conv1.weight.is_contiguous()
    x = torch.randn(4, 3, 32, 32)
    for net in (fast, plain):
        net.train()
        net.zero_grad()
        net(x).square().sum().backward()
    torch.testing.assert_close(fast.eval()(x), plain.eval()(x), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(
        fast.model.conv1.weight.grad, plain.model.conv1.weight.grad, rtol=1e-3, atol=1e-4
    )
    assert fast.model.conv1.weight.grad.is_contiguous(memory_format=torch.channels_last)
