"""NIfTI label volumes cut as their image volumes are: the masks of
:func:`~selfsup.data.readers.volumes.read_volume_slice`'s slices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from selfsup.data.pixels import DataError, Reading


def read_label_slice(
    path: Path, index: int, reading: Reading, image: Path | None = None
) -> tuple[np.ndarray, tuple[float, float]]:
    """Slice ``index`` of a label volume (class indices) cut as :func:`read_volume_slice`
    cuts its image volume: the same reorientation, plane and display flip, the class
    indices kept as they are (no window), square pixels by nearest neighbour. Returns
    ``(H, W)`` int64 and the slice's pixel size ``(rows, columns)`` in mm. ``image``: the
    volume the labels belong to, whose grid (shape and orientation) they must share."""
    import nibabel as nib

    from selfsup.data.readers.volumes import (
        PLANES,
        load_volume,
        read_volume_header,
        slice_shape,
    )

    img = load_volume(Path(path))
    if len(img.shape) != 3:
        raise DataError(f"{path}: a label volume of shape {img.shape}; give one 3D volume of "
                        "class indices.")  # fmt: skip
    header = read_volume_header(Path(path))
    if image is not None:
        other = load_volume(Path(image))
        same_grid = other.shape[:3] == img.shape and np.allclose(other.affine, img.affine,
                                                                  atol=1e-3)  # fmt: skip
        if not same_grid:
            raise DataError(
                f"{path}: the label volume ({img.shape}) is not on its image's grid "
                f"({image}: {other.shape[:3]}, or another orientation); resample the labels "
                "onto the image (nearest neighbour) first."
            )
    a, cols, rows = PLANES[reading.slice_axis]
    n = header.shape[a]
    if not 0 <= index < n:
        raise DataError(f"{path}: slice {index}; the label volume has {n} {reading.slice_axis} "
                        f"slices (0..{n - 1}).")  # fmt: skip
    data = np.asarray(nib.as_closest_canonical(img).dataobj)
    if not np.all(data == np.round(data)):
        raise DataError(f"{path}: the label volume holds fractional values; give class "
                        "indices (integers, 0 the background).")  # fmt: skip
    labels = np.ascontiguousarray(data.transpose(a, rows, cols)[index, ::-1, :]).astype(np.int64)
    spacing = (header.spacing[rows], header.spacing[cols])
    size = slice_shape(header, reading)
    if size != labels.shape:  # square pixels: the image was resampled, the labels follow
        t = torch.from_numpy(labels)[None, None].float()
        labels = F.interpolate(t, size=size, mode="nearest")[0, 0].long().numpy()
        fine = min(spacing)
        spacing = (fine, fine)
    return labels, (float(spacing[0]), float(spacing[1]))
