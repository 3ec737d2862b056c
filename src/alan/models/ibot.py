"""Masked-patch self-distillation (iBOT) as DINOv2 uses it: block masks and the masked student.

Oquab et al., "DINOv2: Learning Robust Visual Features without Supervision" (2023), section 4,
"Patch-level objective": some patches of the student's global crops are replaced by a learnt
mask token, the teacher sees the full crops, and an iBOT head on both sides is trained with a
cross-entropy between the teacher's centred, sharpened softmax and the student's log-softmax at
the masked positions only (Zhou et al., "iBOT: Image BERT Pre-Training with Online Tokenizer",
2022, section 3.2). The loss is lightly's `IBOTPatchLoss`, the masked ViT lightly's
`MaskedVisionTransformerTIMM` and the masks lightly's `random_block_mask`, DINOv2's block-wise
masking: a share of the images (``probability``, 0.5) is masked, each with its own ratio from
``ratio`` ((0.1, 0.5)) drawn per image from its own slice of that range, as rectangles of at
least 4 patches with an aspect ratio between 0.3 and 1 / 0.3; the other images are not masked.
"""

from __future__ import annotations

import random

import torch
from lightly.models.modules import MaskedVisionTransformerTIMM
from lightly.models.utils import random_block_mask
from torch import Tensor, nn


def block_masks(n: int, grid: int, ratio: tuple[float, float] = (0.1, 0.5), probability: float = 0.5,
                seed: int = 0, device: torch.device | str | None = None) -> Tensor:
    """DINOv2's block masks for `n` images of `grid` x `grid` patches: bool ``(n, grid, grid)``.

    A function of `seed` alone (Python's global RNG, which lightly's masking draws from, is left
    as it was). At least one patch of the batch is masked, so the iBOT term is never empty.
    """
    state = random.getstate()
    try:
        random.seed(seed)
        masks = random_block_mask((n, grid, grid), batch_mask_ratio=probability, min_image_mask_ratio=ratio[0],
                                  max_image_mask_ratio=ratio[1])
    finally:
        random.setstate(state)
    if not masks.any():  # a zero share of masked images, or no block fitted a tiny grid
        masks[0, grid // 2, grid // 2] = True
    return masks.to(device) if device is not None else masks


def masked_vit(vit: nn.Module, mask_token: nn.Parameter) -> MaskedVisionTransformerTIMM:
    """`vit` (a timm ViT, weights untouched) seen through lightly's masked ViT with `mask_token`."""
    return MaskedVisionTransformerTIMM(vit=vit, mask_token=mask_token, weight_initialization="skip",
                                       pos_embed_initialization="skip")


def encode_masked(masked: MaskedVisionTransformerTIMM, images: Tensor, masks: Tensor | None) -> tuple[Tensor, Tensor]:
    """CLS ``(N, D)`` and patch tokens ``(N, grid*grid, D)`` after the final norm, with the patches
    where ``masks`` (bool ``(N, grid, grid)``) is True replaced by the mask token before the
    position embedding is added (as DINOv2's `prepare_tokens_with_masks`)."""
    seq = None
    if masks is not None:
        prefix = masks.new_zeros(masks.shape[0], masked.vit.num_prefix_tokens)
        seq = torch.cat([prefix, masks.flatten(1)], dim=1)
    tokens = masked.encode(images, mask=seq)
    p = masked.vit.num_prefix_tokens
    return tokens[:, 0], tokens[:, p:]


__all__ = ["block_masks", "encode_masked", "masked_vit"]
