"""selfsup's Gaussian blur (two banded matrix products) against torchvision's k x k
convolution: the same view for any sigma, kernel, image shape and channel count, and the
same sigma draw."""

import pytest
import torch
from torchvision.transforms import v2

from selfsup.transforms import SeparableGaussianBlur


@pytest.mark.parametrize(
    ("shape", "kernel"), [((3, 224, 224), 23), ((1, 50, 64), 5), ((2, 3, 40, 31), (7, 3))]
)
@pytest.mark.parametrize("sigma", [0.1, 0.8, 2.0])
def test_the_blur_is_torchvisions(shape, kernel, sigma):
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
    params = {"sigma": [sigma, sigma * 1.3]}
    ours = SeparableGaussianBlur(kernel, sigma=(0.1, 2.0)).transform(x, params)
    theirs = v2.GaussianBlur(kernel, sigma=(0.1, 2.0)).transform(x, params)
    assert ours.shape == x.shape
    assert torch.allclose(ours, theirs, atol=2e-6)


def test_the_sigma_draw_is_torchvisions():
    x = torch.rand(1, 32, 32)
    torch.manual_seed(4)
    ours = SeparableGaussianBlur(9, sigma=(0.1, 2.0))(x)
    torch.manual_seed(4)
    theirs = v2.GaussianBlur(9, sigma=(0.1, 2.0))(x)
    assert torch.allclose(ours, theirs, atol=2e-6)
