"""Attention maps against softmax(q k^T / sqrt(d)) by hand; images of any size; the PNGs."""

import pytest
import torch
from PIL import Image

from selfsup.backbones import Backbone
from selfsup.checkpoints import LoadedBackbone
from selfsup.errors import ConfigError
from selfsup.viz.attention import attention_maps, last_block_attention, mass_mask, write_attention


def vit(**kwargs) -> Backbone:
    torch.manual_seed(0)
    return Backbone("vit_tiny", img_size=32, patch_size=8, depth=3, **kwargs).eval()


def test_hooked_attention_equals_the_formula_and_other_blocks_stay_fused(monkeypatch):
    backbone = vit()
    x = torch.randn(2, 3, 32, 48)
    blocks = backbone.model.blocks
    assert all(b.attn.fused_attn for b in blocks)  # timm's SDPA path on this machine
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *a, **k: calls.append(1) or sdpa(*a, **k))  # fmt: skip
    weights = last_block_attention(backbone, x)
    assert len(calls) == len(blocks) - 1  # every block but the last kept its fused kernel
    assert all(b.attn.fused_attn for b in blocks)  # and the last one is fused again
    # By hand: the last block's input, its norm, qkv, softmax(q k^T / sqrt(d)).
    with torch.no_grad():
        vit_model = backbone.model
        tokens = vit_model.norm_pre(vit_model._pos_embed(vit_model.patch_embed(x)))
        for block in blocks[:-1]:
            tokens = block(tokens)
        attn = blocks[-1].attn
        h = blocks[-1].norm1(tokens)
        b, n, d = h.shape
        qkv = (h @ attn.qkv.weight.T + attn.qkv.bias).reshape(b, n, 3, attn.num_heads, -1)
        q, k = qkv[:, :, 0].transpose(1, 2), qkv[:, :, 1].transpose(1, 2)
        expected = torch.softmax(q @ k.transpose(-2, -1) / (d // attn.num_heads) ** 0.5, dim=-1)
    assert weights.shape == (2, 3, 1 + 4 * 6, 1 + 4 * 6)
    assert torch.allclose(weights, expected, atol=1e-5)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 3, 25), atol=1e-5)
    maps, from_cls = attention_maps(backbone, x)
    assert from_cls and maps.shape == (2, 3, 4, 6)
    assert torch.allclose(maps.sum((-2, -1)), torch.ones(2, 3), atol=1e-5)


def test_without_a_cls_token_maps_are_the_attention_each_patch_receives():
    backbone = vit(pool="avg", class_token=False)
    x = torch.randn(1, 3, 32, 32)
    weights = last_block_attention(backbone, x)  # (1, heads, 16, 16): patches only
    maps, from_cls = attention_maps(backbone, x)
    assert not from_cls
    assert torch.allclose(maps.flatten(-2), weights.mean(2), atol=1e-6)


def test_mass_mask_keeps_the_top_share_of_attention():
    maps = torch.tensor([[0.5, 0.3], [0.15, 0.05]])
    assert mass_mask(maps, 0.6).tolist() == [[True, True], [False, False]]  # 0.5 < 0.6
    assert mass_mask(maps, 0.5).tolist() == [[True, False], [False, False]]
    assert mass_mask(maps, 0.9).tolist() == [[True, True], [True, False]]


def test_write_attention_for_non_square_images_and_another_size(tmp_path):
    backbone = vit()
    loaded = LoadedBackbone(backbone, {"image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3,
                                       "loaded": "teacher"}, "x.ckpt")  # fmt: skip
    wide = tmp_path / "wide.png"
    Image.new("RGB", (90, 50), (200, 30, 30)).save(wide)
    gray = tmp_path / "gray.png"
    Image.new("L", (40, 40), 128).save(gray)
    out = tmp_path / "att"
    result = write_attention(loaded, [str(wide), str(gray)], out, threshold=0.6)
    assert result["heads"] == 3 and result["cls_token"]
    # Shorter side -> 32 px, aspect kept (90x50 -> 58x32), cropped to multiples of 8.
    for name in ("image", "mean", "mask", "head-0", "head-2"):
        assert Image.open(out / "wide" / f"{name}.png").size == (56, 32)
        assert Image.open(out / "gray" / f"{name}.png").size == (32, 32)
    assert (out / "overview.png").is_file()
    write_attention(loaded, [str(wide)], tmp_path / "sized", size=(48, 80))
    assert Image.open(tmp_path / "sized" / "wide" / "head-1.png").size == (80, 48)
    resnet = LoadedBackbone(Backbone("resnet18"), loaded.meta, "r.ckpt")
    with pytest.raises(ConfigError, match="need a ViT"):
        write_attention(resnet, [str(wide)], tmp_path / "r")


def test_output_names_stay_readable_and_never_share_a_place():
    from selfsup.viz.names import output_names

    assert output_names(["x/wide.png", "y/gray.png"]) == ["wide", "gray"]
    assert output_names(["test/a/0.png", "test/b/0.png", "test/b/1.png"]) == ["a_0", "b_0", "1"]
    assert output_names(["p/a/0.png", "q/a/0.png", "b/0.png"]) == ["p_a_0", "q_a_0", "b_0"]
    # Nothing in the path tells them apart: a numeric suffix, still one place each.
    names = output_names(["a/0.png", "a/0.jpg", "a/0.png", "a_0.png", "b/0.png"])
    assert names[:3] == ["a_0", "a_0-2", "a_0-3"] and len(set(names)) == 5


def test_same_named_images_in_different_folders_get_their_own_maps(tmp_path):
    backbone = vit()
    loaded = LoadedBackbone(backbone, {"image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3,
                                       "loaded": "teacher"}, "x.ckpt")  # fmt: skip
    colours = {"a": (230, 20, 20), "b": (20, 20, 230)}
    paths = []
    for folder, colour in colours.items():
        (tmp_path / "test" / folder).mkdir(parents=True)
        paths.append(tmp_path / "test" / folder / "0.png")
        Image.new("RGB", (32, 32), colour).save(paths[-1])
    out = tmp_path / "att"
    result = write_attention(loaded, [str(p) for p in paths], out)
    assert result["images"] == [str(out / "a_0"), str(out / "b_0")]
    for folder, colour in colours.items():
        shown = Image.open(out / f"{folder}_0" / "image.png").convert("RGB").getpixel((16, 16))
        assert all(abs(s - c) <= 2 for s, c in zip(shown, colour, strict=True)), (folder, shown)
    assert not (out / "0").exists()


def test_a_register_model_maps_the_class_token_over_patches_only():
    """DINOv2's layout (class token + 4 registers): the map is the class token's attention
    to the patches, renormalised without the mass on the class token and the registers."""
    torch.manual_seed(0)
    backbone = Backbone("vit_small_patch14_reg4_dinov2", img_size=28, patch_size=7, depth=2,
                        embed_dim=32, num_heads=2).eval()  # fmt: skip
    x = torch.randn(2, 3, 28, 28)
    weights = last_block_attention(backbone, x)
    assert weights.shape == (2, 2, 5 + 16, 5 + 16)
    maps, from_cls = attention_maps(backbone, x)
    assert from_cls and maps.shape == (2, 2, 4, 4)
    expected = weights[:, :, 0, 5:] / weights[:, :, 0, 5:].sum(-1, keepdim=True)
    assert torch.allclose(maps.flatten(2), expected, atol=1e-6)
    assert weights[:, :, 0, 1:5].sum() > 0  # the registers did take some of the mass
