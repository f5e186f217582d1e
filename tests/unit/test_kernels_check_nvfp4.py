"""The NVFP4 reference quantizer (kernels_check.nvfp4) on the CPU."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from hypothesis import assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from kernels_check import nvfp4 as q4  # noqa: E402


def test_roundtrip_error_of_gaussian_data_is_in_band():
    from kernels_check.checks import NVFP4_ROUNDTRIP_BAND

    g = torch.Generator().manual_seed(1)
    x = torch.randn(256, 2048, generator=g)
    err = q4.rel_error(q4.quantize(x).dequantize(), x)
    assert NVFP4_ROUNDTRIP_BAND[0] <= err <= NVFP4_ROUNDTRIP_BAND[1]


def test_shapes_and_dtypes():
    x = torch.randn(3, 5, 64)
    q = q4.quantize(x)
    assert q.packed.shape == (3, 5, 32) and q.packed.dtype == torch.uint8
    assert q.block_scale.shape == (3, 5, 4) and q.block_scale.dtype == torch.float8_e4m3fn
    assert q.global_scale.dtype == torch.float32 and q.global_scale.ndim == 0
    assert q.dequantize().shape == x.shape


def test_global_and_block_scale_follow_nvidia_convention():
    x = torch.zeros(1, 32)
    x[0, 3] = -3.0  # block 0 amax 3
    x[0, 20] = 12.0  # block 1 amax 12 = tensor amax
    q = q4.quantize(x)
    assert float(q.global_scale) == pytest.approx(448 * 6 / 12.0)
    # block scale = block_amax / 6 * global: block 1 -> 448 exactly, block 0 -> 112
    assert q.block_scale.float().tolist() == [[112.0, 448.0]]
    assert q.dequantize()[0, 3] == -3.0 and q.dequantize()[0, 20] == 12.0


def test_rejects_k_not_multiple_of_16():
    with pytest.raises(ValueError, match="multiple of 16"):
        q4.quantize(torch.randn(2, 24))


def test_all_zero_input_quantizes_to_zero():
    q = q4.quantize(torch.zeros(4, 32))
    assert torch.count_nonzero(q.packed) == 0
    assert torch.equal(q.dequantize(), torch.zeros(4, 32))


@pytest.mark.parametrize(
    "value,expected",
    [(0.25, 0.0), (0.26, 0.5), (0.75, 1.0), (1.25, 1.0), (1.75, 2.0), (2.5, 2.0), (3.5, 4.0), (5.0, 4.0),
     (5.01, 6.0), (7.5, 6.0), (-0.75, -1.0), (-5.0, -4.0), (-100.0, -6.0)],
)
def test_e2m1_rounding_is_nearest_ties_to_even_and_saturates(value, expected):
    assert float(q4.e2m1_decode(q4.e2m1_codes(torch.tensor([value])))[0]) == expected


def test_negative_values_smaller_than_half_a_step_become_positive_zero_code():
    assert int(q4.e2m1_codes(torch.tensor([-0.1]))[0]) == 0


def test_pack_puts_even_index_in_low_nibble():
    codes = torch.tensor([[1, 2, 15, 8]], dtype=torch.uint8)
    assert q4.pack(codes).tolist() == [[0x21, 0x8F]]


@given(st.lists(st.integers(0, 15), min_size=2, max_size=64).filter(lambda v: len(v) % 2 == 0))
def test_pack_unpack_roundtrip(codes):
    c = torch.tensor(codes, dtype=torch.uint8)
    assert torch.equal(q4.unpack(q4.pack(c)), c)


@settings(max_examples=60, deadline=None)
@given(
    codes=st.lists(st.integers(0, 15), min_size=32, max_size=32),
    exps=st.tuples(st.integers(-6, 6), st.integers(-6, 6)),
    gexp=st.integers(-3, 3),
)
def test_values_on_the_grid_roundtrip_exactly(codes, exps, gexp):
    """A block whose amax is 6 x a power of two and whose values are e2m1 grid points x that scale is
    represented exactly, for any power-of-two global scale that keeps the block scale in e4m3 range."""
    assume(max(exps) + gexp <= 8)  # e4m3 max is 448 = 1.75 x 2^8: a block scale of 2^9 is out of range
    c = torch.tensor(codes, dtype=torch.uint8).reshape(2, 16)
    c[:, 0] = 7  # +6 in each block: the block amax is exactly 6 x scale
    scale = torch.tensor([2.0 ** exps[0], 2.0 ** exps[1]])
    x = (q4.e2m1_decode(c) * scale[:, None]).reshape(1, 32)
    q = q4.quantize(x, global_scale=2.0 ** gexp)
    assert torch.equal(q.dequantize(), x)
    canon = c.clone()
    canon[canon == 8] = 0  # -0 is stored as +0
    assert torch.equal(q4.unpack(q.packed).reshape(2, 16), canon)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 300), st.integers(1, 40))
def test_to_blocked_matches_the_documented_offsets_and_inverts(rows, cols):
    s = torch.arange(rows * cols, dtype=torch.float32).reshape(rows, cols) + 1
    flat = q4.to_blocked(s)
    pr, pc = -(-rows // 128) * 128, -(-cols // 4) * 4
    assert flat.numel() == pr * pc
    n_cb = pc // 4
    for r, c in [(0, 0), (rows - 1, cols - 1), (rows // 2, cols // 3)]:
        tile = (r // 128) * n_cb + c // 4
        off = tile * 512 + (r % 32) * 16 + ((r % 128) // 32) * 4 + c % 4
        assert flat[off] == s[r, c]
    assert torch.equal(q4.from_blocked(flat, rows, cols), s)


def test_rel_error_never_passes_nan():
    ref = torch.ones(4)
    out = torch.tensor([1.0, float("nan"), 1.0, 1.0])
    assert q4.rel_error(out, ref) == float("inf")
