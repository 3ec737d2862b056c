import math

import pytest
import torch

from alan.models.raptor import RaptorHead
from alan.models.straptor import PRESETS, StraptorConfig, StraptorLoss, preset


def _cos(u, v):
    nu = math.sqrt(sum(x * x for x in u)) or 1e-10
    nv = math.sqrt(sum(x * x for x in v)) or 1e-10
    return sum(a * b for a, b in zip(u, v)) / (nu * nv)


def _softmax(v):
    m = max(v)
    e = [math.exp(x - m) for x in v]
    return [x / sum(e) for x in e]


def oracle(feats, logits, cfg: StraptorConfig, pairs):
    """The formula re-stated with Python loops over frames and token pairs (no sampling)."""
    f = feats.tolist()
    s = logits.tolist()
    B, T, N = len(f), len(f[0]), len(f[0][0])
    if cfg.activation == "softmax":
        s = [[[_softmax(tok) for tok in frame] for frame in seq] for seq in s]
    anchor = pairs.anchor.tolist()
    partner_frame = pairs.partner_frame.tolist()
    partner_seq = None if pairs.partner_seq is None else pairs.partner_seq.tolist()

    frame_pairs = {"self": [((b, t), (b, t)) for b in range(B) for t in range(T)]}
    if cfg.similar == "anchor":
        frame_pairs["similar"] = [((b, anchor[b]), (b, t)) for b in range(B) for t in range(T)]
    else:
        frame_pairs["similar"] = [((b, t), (b, partner_frame[b][t])) for b in range(B) for t in range(T)]
    if partner_seq is not None:
        frame_pairs["random"] = [((b, t), (partner_seq[b], t)) for b in range(B) for t in range(T)]

    total = 0.0
    for kind, plist in frame_pairs.items():
        Fs, Ss = [], []
        for (b1, t1), (b2, t2) in plist:
            Fs.append([[_cos(f[b1][t1][i], f[b2][t2][j]) for j in range(N)] for i in range(N)])
            Ss.append([[_cos(s[b1][t1][i], s[b2][t2][j]) for j in range(N)] for i in range(N)])
        global_mean = sum(x for Fm in Fs for row in Fm for x in row) / (len(Fs) * N * N)
        acc = 0.0
        for Fm, Sm in zip(Fs, Ss):
            for i in range(N):
                rowmean = sum(Fm[i]) / N
                for j in range(N):
                    fij = Fm[i][j]
                    if cfg.pointwise:
                        fij = fij - rowmean + (global_mean if cfg.restore_mean else 0.0)
                    sij = max(Sm[i][j], 0.0) if cfg.zero_clamp else Sm[i][j]
                    acc += (fij - cfg.shift(kind)) * sij
        total += -cfg.weight(kind) * acc / (len(plist) * N * N)
    return total


CONFIGS = [
    PRESETS["reference"],
    PRESETS["stego"].__class__(**{**PRESETS["stego"].to_dict(), "feature_samples": None}),
    StraptorConfig(activation="none", zero_clamp=True, restore_mean=True, similar="shuffle"),
    StraptorConfig(activation="none", zero_clamp=False, pointwise=False),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=["reference", "stego-all-points", "logits-clamp", "logits-raw"])
@pytest.mark.parametrize("dense", [False, True], ids=["fast", "dense"])
def test_matches_loop_oracle(cfg, dense):
    g = torch.Generator().manual_seed(0)
    B, T, N, D, K = 3, 3, 4, 5, 3
    feats = torch.randn(B, T, N, D, generator=g, dtype=torch.float64)
    logits = torch.randn(B, T, N, K, generator=g, dtype=torch.float64)
    loss = StraptorLoss(cfg)
    if not dense and not loss.factorises:
        pytest.skip("the factorised path only exists when S >= 0")
    pairs = loss.draw(B, T, generator=g)
    value = loss(feats.double(), logits.double(), pairs, dense=dense)
    assert value.item() == pytest.approx(oracle(feats, logits, cfg, pairs), rel=1e-4, abs=1e-6)


def test_fast_and_dense_agree_with_sampling_and_gradients():
    g = torch.Generator().manual_seed(1)
    B, T, N, D, K = 2, 4, 16, 8, 5
    feats = torch.randn(B, T, N, D, generator=g)
    logits = torch.randn(B, T, N, K, generator=g, requires_grad=True)
    loss = StraptorLoss(preset("stego", feature_samples=3))
    pairs = loss.draw(B, T, generator=g)
    fast = loss(feats, logits, pairs)
    (g_fast,) = torch.autograd.grad(fast, logits)
    dense = loss(feats, logits, pairs, dense=True)
    (g_dense,) = torch.autograd.grad(dense, logits)
    assert fast.item() == pytest.approx(dense.item(), rel=1e-4, abs=1e-6)
    torch.testing.assert_close(g_fast, g_dense, rtol=1e-3, atol=1e-6)
    assert pairs.coords1.shape == (B, T, 9, 2)


def test_sampled_points_equal_tokens_on_grid():
    """Sampling exactly at the grid centres reproduces the all-token loss (checks the sampler's layout)."""
    g = torch.Generator().manual_seed(2)
    B, T, side, D, K = 2, 2, 3, 6, 4
    feats = torch.randn(B, T, side * side, D, generator=g)
    logits = torch.randn(B, T, side * side, K, generator=g)
    full = StraptorLoss(preset("reference", similar="shuffle"))
    pairs = full.draw(B, T, generator=g)
    lin = torch.linspace(-1, 1, side)
    yy, xx = torch.meshgrid(lin, lin, indexing="ij")
    coords = torch.stack([xx.flatten(), yy.flatten()], -1).expand(B, T, -1, -1)
    pairs_s = type(pairs)(pairs.anchor, pairs.partner_frame, pairs.partner_seq, coords, coords)
    sampled = StraptorLoss(preset("reference", similar="shuffle", feature_samples=side))
    assert sampled(feats, logits, pairs_s).item() == pytest.approx(full(feats, logits, pairs).item(), rel=1e-5)


def test_one_sequence_batch_is_finite_and_skips_random_term():
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(1, 16, 9, 8, generator=g)
    logits = torch.randn(1, 16, 9, 6, generator=g, requires_grad=True)
    for name in PRESETS:
        loss = StraptorLoss(PRESETS[name])
        value = loss(feats, logits)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(logits.grad).all()
        assert loss.last_terms["random"].item() == 0.0
        assert loss.last_terms["self"].item() != 0.0
        logits.grad = None


def test_gradient_reaches_only_the_head():
    torch.manual_seed(0)
    from alan.models.backbones import create_backbone

    backbone = create_backbone("vit_tiny_p8_112").eval().requires_grad_(False)
    head = RaptorHead(backbone.embed_dim, 8)
    frames = torch.rand(2 * 3, 112, 112)
    _, tokens = backbone(frames)
    tokens = tokens.reshape(2, 3, -1, backbone.embed_dim).requires_grad_(True)
    logits = head(tokens.detach())
    StraptorLoss(PRESETS["reference"])(tokens, logits).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    assert tokens.grad is None  # the features are constants of the loss
    assert all(p.grad is None for p in backbone.parameters())


def test_attractive_self_term_rewards_matching_parcels():
    """Codes that copy the feature clusters score lower (better) than codes that scramble them."""
    g = torch.Generator().manual_seed(4)
    B, T, N, K = 2, 2, 16, 2
    protos = torch.randn(K, 8, generator=g)
    labels = torch.randint(0, K, (B, T, N), generator=g)
    feats = protos[labels] + 0.05 * torch.randn(B, T, N, 8, generator=g)
    good = 10 * torch.nn.functional.one_hot(labels, K).float()
    bad = 10 * torch.nn.functional.one_hot(torch.randint(0, K, (B, T, N), generator=g), K).float()
    loss = StraptorLoss(preset("reference", w_similar=0, w_random=0))
    pairs = loss.draw(B, T, generator=g)
    assert loss(feats, good, pairs) < loss(feats, bad, pairs)
