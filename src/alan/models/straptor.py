"""STRAPTOR loss: STEGO's contrastive correlation loss adapted to video (ALAN paper, section 3).

For two frames a, b with (frozen) token features f and head outputs s (softmax of the RAPTOR
logits, as in the reference code), let

    F_ab[i, j] = cos(f_a[i], f_b[j])        S_ab[i, j] = cos(s_a[i], s_b[j])

STEGO centres F "pointwise" (Hamilton et al. 2022, ``ContrastiveCorrelationLoss.helper``):
subtract the mean over the second frame's tokens and, optionally, add back the global mean of F
over every pair of that kind in the batch. One term is

    L = -w * mean( (F_ab - shift) * max(S_ab, 0) )

and STRAPTOR sums three kinds of pairs per frame:

    self     the frame with itself (attractive)
    similar  another frame of the same sequence (replaces STEGO's kNN neighbours)
    random   the same time index of another, random sequence of the batch (repulsive)

Presets (`PRESETS`):
    reference  github.com/AstraZeneca/UnlockingHeart ``StegoLikeModel._loss_fn``: weights
               1.0 / 0.5 / 1.0, shift 0.3 for all three, row-mean centring without restoring the
               global mean, "similar" = one random anchor frame per sequence against every frame
               of that sequence (itself included), all tokens.
    stego      STEGO's ViT-S settings: weights 0.67 / 0.25 / 0.63, shifts 0.18 / 0.12 / 0.46,
               global mean restored, 11 x 11 random sample points per frame (bilinear
               ``grid_sample``), "similar" = each frame against one other random frame.

Differences from the reference code, on purpose: terms are averaged over sequences (the
reference sums them, a constant factor B that Adam ignores); the reference's "similar" term
uses the "self" shift (a slip that is inert at its defaults) while here each term has its own;
no histograms. A batch of ONE sequence has no other sequence to contrast with: the random
term is then skipped (it contributes 0) rather than faked with frames of the same video.

Speed: with non-negative S (softmax outputs, or zero-clamp off) the sum over token pairs
factorises exactly: sum_ij F_ij S_ij = <f_a^T s_a, f_b^T s_b> with normalised f and s, and the
centring terms reduce to means and sums, so a pair costs O(D K) after an O(N D K) pass per
frame instead of O(N^2 D). Otherwise (logits with zero-clamp) the dense N x N path is used.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

KINDS = ("self", "similar", "random")


@dataclass(frozen=True)
class StraptorConfig:
    """Loss hyperparameters (see the module docstring for the presets)."""

    w_self: float = 1.0
    w_similar: float = 0.5
    w_random: float = 1.0
    shift_self: float = 0.3
    shift_similar: float = 0.3
    shift_random: float = 0.3
    pointwise: bool = True        # subtract the mean over the second frame's tokens
    restore_mean: bool = False    # ... and add back the global mean of F (STEGO)
    zero_clamp: bool = True       # max(S, 0)
    activation: str = "softmax"   # S on softmax outputs ("softmax") or on raw logits ("none")
    feature_samples: int | None = None  # sample n x n random points per frame (STEGO: 11)
    similar: str = "anchor"       # "anchor" (reference) or "shuffle" (each frame vs another)

    def __post_init__(self) -> None:
        if self.activation not in ("softmax", "none"):
            raise ValueError(f"activation must be 'softmax' or 'none', got {self.activation!r}")
        if self.similar not in ("anchor", "shuffle"):
            raise ValueError(f"similar must be 'anchor' or 'shuffle', got {self.similar!r}")

    def weight(self, kind: str) -> float:
        return getattr(self, f"w_{kind}")

    def shift(self, kind: str) -> float:
        return getattr(self, f"shift_{kind}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PRESETS: dict[str, StraptorConfig] = {
    "reference": StraptorConfig(),
    "stego": StraptorConfig(w_self=0.67, w_similar=0.25, w_random=0.63, shift_self=0.18, shift_similar=0.12,
                            shift_random=0.46, restore_mean=True, feature_samples=11, similar="shuffle"),
}


def preset(name: str, **overrides: Any) -> StraptorConfig:
    """A named preset with optional field overrides."""
    if name not in PRESETS:
        raise ValueError(f"unknown STRAPTOR preset {name!r}; known: {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)


@dataclass
class Pairs:
    """The random choices of one loss evaluation (drawn by `StraptorLoss.draw`)."""

    anchor: torch.Tensor                # (B,) anchor frame per sequence ("anchor" similar)
    partner_frame: torch.Tensor         # (B, T) other frame of the same sequence ("shuffle" similar)
    partner_seq: torch.Tensor | None    # (B,) other sequence (None when B == 1)
    coords1: torch.Tensor | None = None  # (B, T, P, 2) in [-1, 1], (x=col, y=row)
    coords2: torch.Tensor | None = None

    def similar_index(self, mode: str, T: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(first frame, second frame) indices (B, T) of the "similar" pairs."""
        B = self.anchor.shape[0]
        t = torch.arange(T, device=self.anchor.device).expand(B, T)
        if mode == "anchor":
            return self.anchor[:, None].expand(B, T), t
        return t, self.partner_frame


def _sample(x: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Tokens (M, N, C) on a g x g grid, coords (M, P, 2) -> bilinear samples (M, P, C) (STEGO's `sample`)."""
    M, N, C = x.shape
    g = int(round(N ** 0.5))
    grid = x.transpose(1, 2).reshape(M, C, g, g)
    out = F.grid_sample(grid, coords[:, :, None, :], mode="bilinear", padding_mode="border", align_corners=True)
    return out[..., 0].transpose(1, 2)


class StraptorLoss(nn.Module):
    """STRAPTOR loss over a batch of clips: `loss(feats (B,T,N,D), logits (B,T,N,K)) -> scalar`.

    `feats` are treated as constants (no gradient flows into them). After each call,
    `last_terms` holds the detached, weighted terms and `last_pairs` the random choices.
    """

    def __init__(self, config: StraptorConfig | None = None, **overrides: Any):
        super().__init__()
        self.config = replace(config or StraptorConfig(), **overrides)
        self.last_terms: dict[str, torch.Tensor] = {}
        self.last_pairs: Pairs | None = None

    def draw(self, B: int, T: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None) -> Pairs:
        """Draw anchors, partners and (if sampling) coordinates."""
        kw = dict(device=device, generator=generator)
        anchor = torch.randint(0, T, (B,), **kw)
        if T > 1:
            partner_frame = (torch.arange(T, device=device) + torch.randint(1, T, (B, T), **kw)) % T
        else:
            partner_frame = torch.zeros(B, 1, dtype=torch.long, device=device)
        partner_seq = (torch.arange(B, device=device) + torch.randint(1, B, (B,), **kw)) % B if B > 1 else None
        c1 = c2 = None
        n = self.config.feature_samples
        if n:
            c1 = torch.rand(B, T, n * n, 2, **kw) * 2 - 1
            c2 = torch.rand(B, T, n * n, 2, **kw) * 2 - 1
        return Pairs(anchor, partner_frame, partner_seq, c1, c2)

    def _codes(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.softmax(-1) if self.config.activation == "softmax" else logits

    @property
    def factorises(self) -> bool:
        """True when max(S, 0) == S is guaranteed (softmax codes) or the clamp is off."""
        return self.config.activation == "softmax" or not self.config.zero_clamp

    def forward(self, feats: torch.Tensor, logits: torch.Tensor, pairs: Pairs | None = None,
                dense: bool | None = None) -> torch.Tensor:
        B, T, N, _ = feats.shape
        if logits.shape[:3] != (B, T, N):
            raise ValueError(f"feats {tuple(feats.shape)} and logits {tuple(logits.shape)} disagree on (B, T, N)")
        pairs = pairs if pairs is not None else self.draw(B, T, feats.device)
        self.last_pairs = pairs
        f = feats.detach().float()
        s = self._codes(logits.float())
        if pairs.coords1 is not None:
            c1, c2 = pairs.coords1.flatten(0, 1), pairs.coords2.flatten(0, 1)
            f1, s1 = _sample(f.flatten(0, 1), c1), _sample(s.flatten(0, 1), c1)
            f2, s2 = _sample(f.flatten(0, 1), c2), _sample(s.flatten(0, 1), c2)
            P = f1.shape[1]
            f1, s1, f2, s2 = (x.reshape(B, T, P, -1) for x in (f1, s1, f2, s2))
        else:
            f1 = f2 = f
            s1 = s2 = s
        f1, f2 = F.normalize(f1, dim=-1, eps=1e-10), F.normalize(f2, dim=-1, eps=1e-10)
        s1, s2 = F.normalize(s1, dim=-1, eps=1e-10), F.normalize(s2, dim=-1, eps=1e-10)

        bt = torch.arange(B, device=f.device)[:, None]
        t = torch.arange(T, device=f.device)[None, :]
        index: dict[str, tuple] = {"self": ((bt, t), (bt, t))}
        ia, ib = pairs.similar_index(self.config.similar, T)
        index["similar"] = ((bt, ia), (bt, ib))
        if pairs.partner_seq is not None:
            index["random"] = ((bt, t), (pairs.partner_seq[:, None], t))

        use_dense = (not self.factorises) if dense is None else dense
        term = self._dense_term if use_dense else self._factorised_term
        cache: dict[str, Any] = {}
        total = feats.new_zeros((), dtype=torch.float32)
        self.last_terms = {}
        for kind in KINDS:
            w = self.config.weight(kind)
            if kind not in index or w == 0:
                self.last_terms[kind] = total.new_zeros(())
                continue
            (ba, ta), (bb, tb) = index[kind]
            second = (f1, s1) if kind == "self" else (f2, s2)
            value = -w * term((f1, s1), second, (ba, ta), (bb, tb), self.config.shift(kind), cache, kind == "self")
            self.last_terms[kind] = value.detach()
            total = total + value
        return total

    def _pointwise_dense(self, Fm: torch.Tensor, shift: float) -> torch.Tensor:
        if self.config.pointwise:
            old = Fm.mean()
            Fm = Fm - Fm.mean(-1, keepdim=True)
            if self.config.restore_mean:
                Fm = Fm - Fm.mean() + old
        return Fm - shift

    def _dense_term(self, first, second, ia, ib, shift, cache, is_self) -> torch.Tensor:
        """mean over pairs and token pairs of (F - shift) * max(S, 0), materialising N x N."""
        fa, sa = first[0][ia], first[1][ia]      # (B, T, P, D|K)
        fb, sb = second[0][ib], second[1][ib]
        with torch.no_grad():
            G = self._pointwise_dense(torch.einsum("btid,btjd->btij", fa, fb), shift)
        S = torch.einsum("btik,btjk->btij", sa, sb)
        if self.config.zero_clamp:
            S = S.clamp(min=0)
        return (G * S).mean()

    def _frame_stats(self, fs: tuple[torch.Tensor, torch.Tensor], cache: dict, key: str):
        """Per frame: A = f^T s (D, K), mean token m (D), code sum sigma (K)."""
        if key not in cache:
            f, s = fs
            cache[key] = (torch.einsum("btnd,btnk->btdk", f, s), f.mean(2), s.sum(2), f.shape[2])
        return cache[key]

    def _factorised_term(self, first, second, ia, ib, shift, cache, is_self) -> torch.Tensor:
        """The same value as `_dense_term` when S >= 0, in O(D K) per pair."""
        A1, m1, sg1, P = self._frame_stats(first, cache, "1")
        A2, m2, sg2, _ = self._frame_stats(second, cache, "1" if second[0] is first[0] else "2")
        Aa, ma, sa = A1[ia], m1[ia], sg1[ia]
        Ab, mb, sb = A2[ib], m2[ib], sg2[ib]
        fs = (Aa * Ab).sum((-1, -2))                          # sum_ij F_ij S_ij
        ss = (sa * sb).sum(-1)                                # sum_ij S_ij
        offset = -shift
        if self.config.pointwise:
            fs = fs - torch.einsum("btd,btdk,btk->bt", mb.detach(), Aa, sb)  # sum_ij rowmean_i S_ij
            if self.config.restore_mean:
                offset = offset + (ma * mb).sum(-1).mean().detach()       # global mean of F
        return ((fs + offset * ss) / (P * P)).mean()

