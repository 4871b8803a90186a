"""Augmentation on the device against the CPU pipeline it is translated from: each
sample's own random parameters with the CPU pipeline's distributions (crop area and
aspect ratio, the blocks' probabilities), the same output statistics, and exactly the
same view when nothing is random."""

import numpy as np
import pytest
import torch
from scipy.stats import ks_2samp
from torchvision.transforms import RandomResizedCrop

from conftest import make_blob_images
from selfsup.data.device_views import DeviceViews, LoadTransform, default_load_size, with_views
from selfsup.transforms import DINOTransform, SimCLRTransform

SIZE = 64


def blobs(n: int) -> torch.Tensor:
    x, _ = make_blob_images(n, SIZE, seed=0)
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()  # (N, 3, 64, 64) uint8


def crop_boxes(device: DeviceViews) -> torch.Tensor:
    """(B, 2): the last call's crop widths and heights (kornia's corner points, inclusive)."""
    src = device.views[0][0]._params["src"]
    return src[:, 2] - src[:, 0] + 1


def test_crop_parameters_are_per_sample_with_torchvisions_distribution():
    torch.manual_seed(0)
    transform = SimCLRTransform(size=32, scale=(0.08, 1.0), blur_prob=0.0)
    device = DeviceViews(transform)
    images = torch.zeros(3000, 3, SIZE, SIZE, dtype=torch.uint8)
    device(images)
    wh = crop_boxes(device).float()
    area, log_ratio = wh.prod(1) / SIZE**2, torch.log(wh[:, 0] / wh[:, 1])
    assert len({tuple(b) for b in wh.tolist()}) > 500  # each sample its own crop
    reference = [
        RandomResizedCrop.get_params(images[0], (0.08, 1.0), (3 / 4, 4 / 3)) for _ in range(3000)
    ]
    ref_area = np.array([h * w / SIZE**2 for _, _, h, w in reference])
    ref_ratio = np.log([w / h for _, _, h, w in reference])
    assert ks_2samp(area.numpy(), ref_area).pvalue > 1e-3
    assert ks_2samp(log_ratio.numpy(), ref_ratio).pvalue > 1e-3


def test_each_block_applies_with_its_probability_per_sample():
    torch.manual_seed(1)
    transform = SimCLRTransform(
        size=32, blur_prob=0.5, solarize_prob=0.2
    )  # flip 0.5, jitter 0.8, gray 0.2
    device = DeviceViews(transform)
    device(torch.zeros(4000, 3, SIZE, SIZE, dtype=torch.uint8))
    applied = {
        type(b).__name__: b._params["batch_prob"].float().mean().item() for b in device.views[0]
    }
    expected = {"RandomHorizontalFlip": 0.5, "ColorJitter": 0.8, "RandomGrayscale": 0.2,
                "RandomGaussianBlur": 0.5, "RandomSolarize": 0.2}  # fmt: skip
    for name, p in expected.items():
        assert applied[name] == pytest.approx(p, abs=4 * (p * (1 - p) / 4000) ** 0.5), name


@pytest.mark.parametrize("grayscale", [False, True])
def test_device_views_have_the_cpu_pipelines_output_statistics(grayscale):
    transform = SimCLRTransform(size=32, blur_prob=0.5, solarize_prob=0.2, grayscale=grayscale,
                                mean=(0.5,) * 3, std=(0.25,) * 3)  # fmt: skip
    images = blobs(800)
    if grayscale:
        images = images[:, :1].contiguous()
        transform = SimCLRTransform(size=32, blur_prob=0.5, solarize_prob=0.2, grayscale=True,
                                    mean=(0.5,), std=(0.25,))  # fmt: skip
    torch.manual_seed(2)
    cpu = torch.stack([transform.pipelines[0](image) for image in images])
    device = DeviceViews(transform)(images)[0]
    assert device.shape == cpu.shape == (800, images.shape[1], 32, 32)
    for stat in (lambda v: v.mean((1, 2, 3)), lambda v: v.std((1, 2, 3))):
        a, b = stat(cpu).numpy(), stat(device).numpy()
        assert ks_2samp(a, b).pvalue > 1e-3
        assert abs(a.mean() - b.mean()) < 0.1 * a.std()


def test_with_nothing_random_the_device_view_is_the_cpu_view():
    transform = SimCLRTransform(size=SIZE, scale=(1.0, 1.0), flip_prob=0.0, color_jitter_prob=0.0,
                                grayscale_prob=0.0, blur_prob=0.0)  # fmt: skip
    for pipeline in transform.pipelines:  # a square crop of the whole image, every time
        pipeline.transforms[1].ratio = (1.0, 1.0)
    images = blobs(8)
    cpu = torch.stack([transform.pipelines[0](image) for image in images])
    assert torch.allclose(DeviceViews(transform)(images)[0], cpu, atol=1e-5)


def test_multi_crop_views_and_batches_from_a_mask_collator():
    transform = DINOTransform(size=48, local_size=24, n_local=3, blur_prob=(1.0, 0.1, 0.5))
    load = LoadTransform(default_load_size(transform))
    image = torch.randint(0, 256, (3, 80, 100), dtype=torch.uint8)
    assert load(image).shape == (3, 55, 55) and load(image).dtype == torch.uint8
    device = DeviceViews(transform)
    images, labels, masks = (
        torch.stack([load(image)] * 4),
        torch.arange(4),
        torch.zeros(8, 9, dtype=torch.bool),
    )
    (views, got_labels), got_masks = with_views(((images, labels), masks), device)
    assert [tuple(v.shape) for v in views] == [(4, 3, 48, 48)] * 2 + [(4, 3, 24, 24)] * 3
    assert got_labels is labels and got_masks is masks
    views, got = with_views((images, labels), device)
    assert len(views) == 5 and got is labels
