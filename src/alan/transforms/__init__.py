"""Batched tensor augmentations (run on the training device)."""

from alan.transforms.multicrop import MultiCrop, counter_uniform, crop_boxes, default_local_size, gaussian_blur, sample_keys

__all__ = ["MultiCrop", "counter_uniform", "crop_boxes", "default_local_size", "gaussian_blur", "sample_keys"]
