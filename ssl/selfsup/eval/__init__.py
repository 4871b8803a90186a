"""Evaluation of pretrained backbones: kNN (and, later, linear probe and fine-tuning)."""
