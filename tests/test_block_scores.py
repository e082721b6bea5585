"""The one-pass Triton antidiagonal block scores against the PyTorch estimate the planners define."""

import os

import pytest
import torch

from vlmsparse.kernels.block_scores import antidiagonal_block_scores_triton
from vlmsparse.methods.scoring import antidiagonal_block_scores

DEVICE = os.environ.get("VLMSPARSE_TEST_DEVICE", "cpu")


@pytest.mark.parametrize(
    "lq,lk,bm,bn,stride,causal",
    [(100, 130, 32, 32, 8, True), (64, 64, 16, 16, 4, False), (37, 90, 16, 32, 4, True), (128, 128, 64, 64, 8, True)],
)
def test_triton_scores_match_pytorch_definition(lq, lk, bm, bn, stride, causal):
    q = torch.randn(2, 4, lq, 32, device=DEVICE)
    k = torch.randn(2, 2, lk, 32, device=DEVICE)
    got = antidiagonal_block_scores_triton(q, k, stride=stride, block_m=bm, block_n=bn, causal=causal)
    want = antidiagonal_block_scores(q, k, stride=stride, block_m=bm, block_n=bn, causal=causal)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    # each query block row holds the probability mass of its tile rows that hold a query
    rows_with_queries = torch.clamp(lq - torch.arange(got.shape[2], device=DEVICE) * bm, 0, bm)
    torch.testing.assert_close(got.sum(-1), (-(-rows_with_queries // stride)).float().expand_as(got.sum(-1)))
