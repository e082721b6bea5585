"""The Triton segment (block-diagonal) attention kernel, run by the interpreter, against its float64 reference."""

import os

import pytest
import torch

from vlmsparse.kernels.segment_attention import segment_attention, segment_attention_ref, segment_layout

DEVICE = os.environ.get("VLMSPARSE_TEST_DEVICE", "cpu")
TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}


@pytest.fixture(autouse=True)
def _on_test_device():
    with torch.device(DEVICE):
        yield


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


def cu_of(lengths: list[int]) -> torch.Tensor:
    return torch.tensor([0] + lengths).cumsum(0).to(torch.int32)


def vision_qkv(n: int, heads: int, head_dim: int, dtype: torch.dtype, kv_heads: int | None = None):
    """q, k, v [1, H, N, D] laid out as a vision tower hands them over: v a strided view of one qkv projection."""
    qkv = torch.randn(n, 3, heads, head_dim).to(dtype)
    q, k, v = qkv.permute(1, 0, 2, 3).unbind(0)
    q, k = (2 * q).contiguous(), k.contiguous()  # rotary embedding makes new tensors of q and k
    q, k, v = (t.transpose(0, 1).unsqueeze(0) for t in (q, k, v))
    if kv_heads is not None:
        k, v = k[:, :kv_heads], v[:, :kv_heads]
    return q, k, v


def per_segment_sdpa(q, k, v, cu):
    group = q.shape[1] // k.shape[1]
    bounds = cu.tolist()
    outs = [
        torch.nn.functional.scaled_dot_product_attention(
            q[:, :, a:b].double(), k[:, :, a:b].double().repeat_interleave(group, 1), v[:, :, a:b].double().repeat_interleave(group, 1)
        )
        for a, b in zip(bounds[:-1], bounds[1:])
        if b > a
    ]
    return torch.cat(outs, dim=2)


CASES = {
    "edges": ([5, 0, 70, 1, 33, 0, 100, 2], 80),  # not multiples of the block, empty segments
    "windows": ([64, 64, 32, 64, 16, 48], 80),  # Qwen2.5-VL windows: full and cut at the frame edge
    "tiny": ([3] * 41 + [1, 2], 64),  # many segments per query block
    "one": ([300], 64),  # one segment longer than a block
}


@pytest.mark.parametrize("case", list(CASES))
def test_kernel_matches_reference(case):
    lengths, head_dim = CASES[case]
    cu = cu_of(lengths)
    q, k, v = vision_qkv(sum(lengths), 2, head_dim, torch.float32)
    out = segment_attention(q, k, v, cu)
    ref = segment_attention_ref(q, k, v, cu)
    assert out.shape == q.shape and out.dtype == q.dtype and out.transpose(1, 2).is_contiguous()
    assert torch.isfinite(out).all()
    assert rel_err(out, ref) < TOL[torch.float32]
    # the reference is the per-segment softmax attention
    assert rel_err(ref, per_segment_sdpa(q, k, v, cu)) < 1e-6


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_kernel_half_precision_and_gqa(dtype):
    lengths = [17, 130, 4, 90]
    cu = cu_of(lengths)
    q, k, v = vision_qkv(sum(lengths), 4, 80, dtype, kv_heads=2)
    out = segment_attention(q, k, v, cu, sm_scale=0.2)
    ref = segment_attention_ref(q, k, v, cu, sm_scale=0.2)
    assert out.dtype == dtype
    assert rel_err(out, ref) < TOL[dtype]


def test_no_leak_across_segments():
    """Changing the keys of one segment changes no output row of another."""
    lengths = [40, 25, 70]
    cu = cu_of(lengths)
    q, k, v = vision_qkv(sum(lengths), 2, 64, torch.float32)
    out = segment_attention(q, k, v, cu)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 40:65] = torch.randn_like(k2[:, :, 40:65])
    v2[:, :, 40:65] = torch.randn_like(v2[:, :, 40:65])
    out2 = segment_attention(q, k2, v2, cu)
    torch.testing.assert_close(out2[:, :, :40], out[:, :, :40])
    torch.testing.assert_close(out2[:, :, 65:], out[:, :, 65:])
    assert not torch.allclose(out2[:, :, 40:65], out[:, :, 40:65])


def test_layout_key_ranges():
    cu = cu_of([5, 0, 70, 1, 33])  # boundaries 0 5 5 75 76 109
    layout = segment_layout(cu, 109, block_m=32)
    # query blocks start at 0, 32, 64, 96; each visits its rows' segments, from the first's start to the last's end
    assert layout.key_start.tolist() == [0, 5, 5, 76]
    assert layout.key_end.tolist() == [75, 75, 109, 109]
    assert layout.segment_ids[:6].tolist() == [0, 0, 0, 0, 0, 2] and layout.segment_ids[75].item() == 3
    assert layout.longest == 70 and layout.segments == 5


@pytest.mark.parametrize(
    "cu, message",
    [
        ([0, 10, 20], "from 0 to N=30"),
        ([0, 20, 10, 30], "non-decreasing"),
        ([1, 30], "from 0 to N=30"),
    ],
)
def test_bad_cu_seqlens(cu, message):
    q, k, v = vision_qkv(30, 2, 64, torch.float32)
    with pytest.raises(ValueError, match=message):
        segment_attention(q, k, v, torch.tensor(cu, dtype=torch.int32))
    with pytest.raises(ValueError, match=message):
        segment_attention_ref(q, k, v, torch.tensor(cu, dtype=torch.int32))


def test_batch_must_be_packed():
    q = torch.randn(2, 2, 30, 64)
    with pytest.raises(ValueError, match="one packed sequence"):
        segment_attention(q, q, q, cu_of([30]))
