"""The one-launch Triton level assignment equals the PyTorch definition (run here through the interpreter).

Importances are small integers whose visible sum per row is made a power of two, so every share and every
cumulative share is exact in float32: both versions then compute the same statistics bit for bit, whatever
order they sum in, and any difference in the levels is a real one.
"""

import os

import pytest
import torch

from vlmsparse.kernels.select_levels import MAX_KEY_BLOCKS, cumulative_levels_triton
from vlmsparse.kernels import select_levels
from vlmsparse.kernels.select_levels import cumulative_levels

ENERGY_4 = ((0.25, 0.5, 0.75, 0.875), (1, 2, 4, 8))
ODD_4 = ((0.3, 0.55, 0.8, 0.95), (1, 2, 4, 8))
ONE = ((0.5,), (1,))
# VLMSPARSE_TEST_DEVICE=cuda TRITON_INTERPRET=0 runs the comparisons on a GPU.
DEVICE = os.environ.get("VLMSPARSE_TEST_DEVICE", "cpu")


def _layout(n_qb: int, n_kb: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal block visibility (queries are the last ``n_qb`` blocks) and the forced diagonal and sink."""
    q = torch.arange(n_qb)[:, None]
    k = torch.arange(n_kb)[None, :]
    visible = k <= q + (n_kb - n_qb)
    forced = visible & ((k == q + (n_kb - n_qb)) | (k == 0))
    return visible, forced


def _importance(shape, forced, free, low=-1, high=4, dtype=torch.float32, exact_total=True):
    """Random small integers (negatives are clamped away); each row's visible sum made a power of two."""
    imp = torch.randint(low, high, shape).float()
    visible = (forced | free).expand(shape)
    if exact_total:
        clamped = imp.clamp(min=0) * visible
        filler = (torch.rand(shape) * visible).argmax(-1, keepdim=True)  # one visible block per row
        rest = clamped.sum(-1, keepdim=True) - clamped.gather(-1, filler)
        target = torch.exp2(torch.ceil(torch.log2(rest + 1)))
        value = torch.where(visible.gather(-1, filler), target - rest, imp.gather(-1, filler))
        imp = imp.scatter(-1, filler, value)
    return imp.to(dtype)


def _check_equal(imp, forced, free, configs):
    imp, forced, free = imp.to(DEVICE), forced.to(DEVICE), free.to(DEVICE)
    seen = set()
    for mode, rule, (thresholds, levels) in configs:
        ref = cumulative_levels(imp, forced, free, thresholds, levels=levels, mode=mode, rule=rule, use_triton=False)
        got = cumulative_levels(imp, forced, free, thresholds, levels=levels, mode=mode, rule=rule, use_triton=True)
        assert got.dtype == torch.int8 and got.shape == imp.shape
        assert torch.equal(got, ref), (mode, rule, thresholds, (got != ref).nonzero()[:8].tolist())
        seen.update(ref.unique().tolist())
    return seen


ALL_CONFIGS = [
    (mode, rule, pairs) for mode in ("energy", "quota") for rule in ("exclusive", "inclusive") for pairs in (ENERGY_4, ONE)
]


def test_matches_torch_causal_broadcast_forced():
    # nKB not a power of two; forced [B, 1, nQB, nKB] with extra forced blocks per batch; free [nQB, nKB]
    # three draws, so that together they exercise several levels (one small draw alone misses level 1 about
    # one time in forty)
    b, h, n_qb, n_kb = 1, 2, 3, 7
    seen = set()
    for _ in range(3):
        visible, forced = _layout(n_qb, n_kb)
        forced = forced[None, None] | (torch.rand(b, 1, n_qb, n_kb) < 0.2) & visible
        free = visible & ~forced[0, 0]
        imp = _importance((b, h, n_qb, n_kb), forced, free)
        seen |= _check_equal(imp, forced, free, ALL_CONFIGS)
    assert {0, 1} <= seen and len(seen) >= 3


def test_matches_torch_overlapping_masks_and_strided_importance():
    # free overlaps forced (forced wins), forced per head, free broadcast over batch and heads,
    # importance a non-contiguous view
    b, h, n_qb, n_kb = 2, 2, 2, 13
    visible, forced = _layout(n_qb, n_kb)
    forced = forced[None, None] | (torch.rand(b, h, n_qb, n_kb) < 0.25) & visible
    free = visible[None, None]
    imp = _importance((b, n_qb, h, n_kb), forced.transpose(1, 2), free).transpose(1, 2)
    assert not imp.is_contiguous()
    configs = [(m, r, ODD_4) for m in ("energy", "quota") for r in ("exclusive", "inclusive")]
    _check_equal(imp, forced, free, configs)


def test_matches_torch_ties_and_zeros():
    # many equal importances, an all-zero row, float16 input, no forced blocks at all
    b, h, n_qb, n_kb = 1, 1, 4, 10
    forced = torch.zeros(n_kb, dtype=torch.bool)
    free = torch.ones(n_qb, n_kb, dtype=torch.bool)
    free[1, 7:] = False
    imp = _importance((b, h, n_qb, n_kb), forced, free, low=0, high=2, dtype=torch.float16)
    imp[0, 0, 2] = 0.0
    configs = [(m, r, ENERGY_4) for m in ("energy", "quota") for r in ("exclusive", "inclusive")]
    _check_equal(imp, forced, free, configs)


def test_matches_torch_padded_rows():
    # 20 -> 32 padded entries; 1 000 -> 1 024 (the longest rows planners meet at block 128)
    for n_kb, n_qb, configs in ((20, 4, [("energy", "exclusive", ENERGY_4), ("quota", "inclusive", ODD_4)]),
                                (1000, 1, [("energy", "exclusive", ENERGY_4)])):
        visible, forced = _layout(n_qb, n_kb)
        free = visible & ~forced
        imp = _importance((1, 1, n_qb, n_kb), forced, free, high=3)
        _check_equal(imp, forced, free, configs)


def test_hand_checked_row():
    # blocks 0..6 visible, 7 invisible; block 6 forced; importances in 16ths of the visible total
    imp = torch.tensor([[[[2.0, 1.0, 4.0, 1.0, 4.0, 0.0, 4.0, 9.0]]]], device=DEVICE)
    forced = torch.tensor([False] * 6 + [True, False], device=DEVICE)
    free = torch.tensor([True] * 6 + [False, False], device=DEVICE)
    # order: b6 (forced), b2, b4 (equal: lower first), b0, b1, b3 (equal: lower first), b5
    # share before, in 16ths: b2 4, b4 8, b0 12, b1 14, b3 15, b5 16
    for use_triton in (False, True):
        def run(thresholds, levels, use_triton=use_triton, **kw):
            out = cumulative_levels(imp, forced, free, thresholds, levels=levels, use_triton=use_triton, **kw)
            return out[0, 0, 0].tolist()

        assert run((0.5, 0.75, 0.875, 0.9375), (1, 2, 4, 8)) == [4, 8, 1, 0, 2, 0, 0, 0]
        # a last threshold of 1 takes every block left: b5's share before it is the row's whole mass (16/16, not
        # under 1), and it still gets level 8, as do b1 and b3; so does a threshold above 1, in either mode
        assert run((0.5, 0.75, 0.875, 1.0), (1, 2, 4, 8)) == [4, 8, 1, 8, 2, 8, 0, 0]
        assert run((0.5, 0.75, 0.875, 1.5), (1, 2, 4, 8)) == [4, 8, 1, 8, 2, 8, 0, 0]
        assert run((1.0,), (1,), mode="quota", rule="inclusive") == [1, 1, 1, 1, 1, 1, 0, 0]
        # shares including the block: b2 8/16, b4 12/16 (<= 0.75 keeps it), b0 14/16
        assert run((0.75,), (1,), rule="inclusive") == [0, 0, 1, 0, 1, 0, 0, 0]
        # quota: ranks 1..6 of 7 visible; rank / 7 < 0.5 for ranks 1..3
        assert run((0.5,), (1,), mode="quota") == [1, 0, 1, 0, 1, 0, 0, 0]
        # (rank + 1) / 7 <= 0.5 for ranks 1..2
        assert run((0.5,), (1,), mode="quota", rule="inclusive") == [0, 0, 1, 0, 1, 0, 0, 0]


def test_cpu_default_is_pytorch(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the Triton kernel must not run for CPU tensors by default")

    monkeypatch.setattr(select_levels, "_levels_triton", fail)
    imp = torch.rand(1, 1, 2, 5)
    cumulative_levels(imp, torch.zeros(5, dtype=torch.bool), torch.ones(5, dtype=torch.bool), (0.5,), levels=(1,))


def test_bad_inputs():
    imp = torch.rand(1, 1, 1, 8)
    forced = torch.zeros(8, dtype=torch.bool)
    free = torch.ones(8, dtype=torch.bool)
    with pytest.raises(ValueError, match="key blocks"):
        n = MAX_KEY_BLOCKS + 1
        cumulative_levels_triton(torch.rand(1, 1, 1, n), torch.zeros(n, dtype=torch.bool),
                                 torch.ones(n, dtype=torch.bool), (0.5,), (1,))
    for use_triton in (False, True):
        with pytest.raises(ValueError, match="one threshold per level"):
            cumulative_levels(imp, forced, free, (0.5, 0.7), levels=(1,), use_triton=use_triton)
        with pytest.raises(ValueError, match="mode"):
            cumulative_levels(imp, forced, free, (0.5,), levels=(1,), mode="mass", use_triton=use_triton)
    with pytest.raises(ValueError, match="1 to 4"):
        cumulative_levels(imp, forced, free, (0.1, 0.2, 0.3, 0.4, 0.5), levels=(1, 1, 2, 4, 8), use_triton=True)
    with pytest.raises(ValueError, match="does not broadcast"):
        cumulative_levels_triton(imp, torch.zeros(7, dtype=torch.bool), free, (0.5,), (1,))
    with pytest.raises(ValueError, match="bool"):
        cumulative_levels_triton(imp, forced.to(torch.uint8), free, (0.5,), (1,))
    # five pairs are fine for the PyTorch path, which the default takes on the CPU
    cumulative_levels(imp, forced, free, (0.1, 0.2, 0.3, 0.4, 0.5), levels=(1, 1, 2, 4, 8))


@pytest.mark.parametrize("mode", ["energy", "quota"])
def test_layout_rules_and_lone_level2_in_the_same_launch(mode):
    # forced_level=1 writes forced blocks as exact (the layout rules) and lone_level2_exact turns a level-2 block
    # with no level-2 neighbour into an exact one: the kernel equals the PyTorch definition, and that equals
    # the two steps applied afterwards
    from vlmsparse.methods.base import BlockLayout, apply_layout_rules
    from vlmsparse.methods.psa import lone_level2_exact

    torch.manual_seed(11)
    n_qb, n_kb = 24, 40
    visible, forced = _layout(n_qb, n_kb)
    forced = forced | (visible & (torch.rand(n_qb, n_kb) < 0.1))  # text blocks too
    free = visible & ~forced
    imp = _importance((2, 3, n_qb, n_kb), forced, free)
    thresholds, levels = ((0.2, 0.45, 0.7, 0.9), (1, 2, 4, 8))
    plain = cumulative_levels(imp, forced, free, thresholds, levels=levels, mode=mode, use_triton=False)
    layout = BlockLayout(torch.zeros(n_qb, n_kb), torch.ones(1, n_qb, dtype=torch.bool),
                         torch.ones(1, n_kb, dtype=torch.bool), forced[None], free[None])
    expected = apply_layout_rules(lone_level2_exact(plain), layout)
    assert (lone_level2_exact(plain) != plain).any() and (expected != plain).any()  # both steps change something
    for use_triton in (False, True):
        got = cumulative_levels(imp.to(DEVICE), forced.to(DEVICE), free.to(DEVICE), thresholds, levels=levels,
                                mode=mode, forced_level=1, lone_level2_exact=True, use_triton=use_triton)
        assert torch.equal(got.cpu(), expected), use_triton
    with pytest.raises(ValueError, match="forced_level must be 0 or 1"):
        cumulative_levels(imp, forced, free, thresholds, levels=levels, forced_level=2)


@pytest.mark.parametrize("mode", ["energy", "quota"])
def test_lone_pooled_blocks_exact_in_the_same_launch(mode):
    # lone_exact=(4, 8) turns a level-4 or level-8 block with no neighbour of its level into an exact one, in the
    # launch that assigns the levels, beside the lone level-2 step: the kernel equals the PyTorch definition, and
    # both equal the steps applied one after another (PSA's lone_pooled="exact" before it was fused)
    from vlmsparse.methods.psa import lone_level2_exact, lone_pooled_blocks

    torch.manual_seed(12)
    n_qb, n_kb = 24, 48
    visible, forced = _layout(n_qb, n_kb)
    free = visible & ~forced
    imp = _importance((2, 3, n_qb, n_kb), forced, free)
    thresholds, levels = ((0.2, 0.35, 0.6, 0.9), (1, 2, 4, 8))
    plain = cumulative_levels(imp, forced, free, thresholds, levels=levels, mode=mode, forced_level=1,
                              use_triton=False)
    two = lone_level2_exact(plain)
    expected = lone_pooled_blocks(two, 1)
    for level in (2, 4, 8):  # every listed level has lone blocks here, and the steps change them
        assert ((plain == level) & (expected == 1)).any(), level
    for use_triton in (False, True):
        got = cumulative_levels(imp.to(DEVICE), forced.to(DEVICE), free.to(DEVICE), thresholds, levels=levels,
                                mode=mode, forced_level=1, lone_level2_exact=True, lone_exact=(4, 8),
                                use_triton=use_triton)
        assert torch.equal(got.cpu(), expected), use_triton
        alone = cumulative_levels(imp.to(DEVICE), forced.to(DEVICE), free.to(DEVICE), thresholds, levels=levels,
                                  mode=mode, forced_level=1, lone_exact=(8,), use_triton=use_triton)
        lone8 = (plain == 8) & (alone.cpu() == 1)
        assert lone8.any() and torch.equal(alone.cpu(), torch.where(lone8, torch.ones_like(plain), plain)), use_triton
    for bad in ((1,), (4, 4), (3,), (True,), ("8",)):
        with pytest.raises(ValueError, match="lone_exact must list pooled levels"):
            cumulative_levels(imp, forced, free, thresholds, levels=levels, lone_exact=bad)
