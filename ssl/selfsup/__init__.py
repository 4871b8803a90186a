"""selfsup: self-supervised pretraining of image encoders on PyTorch Lightning."""

__version__ = "0.1.0"
