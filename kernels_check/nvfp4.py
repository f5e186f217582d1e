"""Reference NVFP4 quantizer in plain torch (runs on CPU or GPU).

Format (NVIDIA's convention, as vLLM / ModelOpt use it):
- values: e2m1, magnitudes {0, 0.5, 1, 1.5, 2, 3, 4, 6}, sign bit 0x8; two values per uint8, the
  element with the even index in the low nibble (the layout torch.float4_e2m1fn_x2 and vLLM's
  scaled_fp4_quant use);
- one float8_e4m3fn scale per 16 consecutive values along the last dimension;
- one fp32 global scale per tensor: global = 448 * 6 / amax, and the stored block scale is
  e4m3(block_amax / 6 * global). Dequantized value = e2m1 * block_scale / global.
Rounding to the e2m1 grid is round-to-nearest, ties to the even code (what cvt.rn.satfinite.e2m1x2 does).

torch is imported by the caller; this module imports it at the top because nothing imports it on the
CLI fast path (kernels_check.checks imports it lazily inside the checks).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

BLOCK = 16
E2M1_MAX = 6.0
E4M3_MAX = 448.0
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)  # code 0..7; code | 8 is the negative
# decision boundaries between neighbouring codes; at a tie the even code wins:
# 0.25 -> 0 (code 0), 0.75 -> 1.0 (code 2), 1.25 -> 1.0 (code 2), 1.75 -> 2.0 (code 4),
# 2.5 -> 2.0 (code 4), 3.5 -> 4.0 (code 6), 5.0 -> 4.0 (code 6)
_TIE_DOWN = (0.25, 1.25, 2.5, 5.0)  # code increments only when strictly above
_TIE_UP = (0.75, 1.75, 3.5)  # code increments when at or above


@dataclass
class Nvfp4Tensor:
    packed: torch.Tensor  # uint8 (..., K/2)
    block_scale: torch.Tensor  # float8_e4m3fn (..., K/16), linear (not swizzled) layout
    global_scale: torch.Tensor  # float32 scalar: 448*6/amax
    shape: tuple[int, ...]

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return dequantize(self, dtype)


def global_scale_for(x: torch.Tensor) -> torch.Tensor:
    amax = x.abs().max().to(torch.float32)
    if not torch.isfinite(amax) or amax == 0:
        return torch.tensor(1.0, dtype=torch.float32, device=x.device)
    return (E4M3_MAX * E2M1_MAX) / amax


def e2m1_codes(v: torch.Tensor) -> torch.Tensor:
    """Round float32 values (already divided by their scale) to e2m1 codes 0..15 (uint8)."""
    mag = v.abs()
    code = torch.zeros_like(mag, dtype=torch.int32)
    for b in _TIE_DOWN:
        code += (mag > b).to(torch.int32)
    for b in _TIE_UP:
        code += (mag >= b).to(torch.int32)
    # NaN compares false everywhere: it lands on code 0; values above 6 saturate at code 7
    sign = (torch.signbit(v) & (code > 0)).to(torch.int32) << 3  # no negative zero: keeps codes canonical
    return (code | sign).to(torch.uint8)


def e2m1_decode(codes: torch.Tensor) -> torch.Tensor:
    lut = torch.tensor(E2M1_VALUES, dtype=torch.float32, device=codes.device)
    c = codes.to(torch.int64)
    mag = lut[c & 7]
    return torch.where((c & 8) != 0, -mag, mag)


def pack(codes: torch.Tensor) -> torch.Tensor:
    """(..., K) codes -> (..., K/2) bytes, even index in the low nibble."""
    if codes.shape[-1] % 2:
        raise ValueError(f"last dimension {codes.shape[-1]} is odd: cannot pack two e2m1 per byte")
    c = codes.to(torch.uint8)
    return c[..., 0::2] | (c[..., 1::2] << 4)


def unpack(packed: torch.Tensor) -> torch.Tensor:
    lo = packed & 0x0F
    hi = packed >> 4
    return torch.stack((lo, hi), dim=-1).reshape(*packed.shape[:-1], packed.shape[-1] * 2)


def quantize(x: torch.Tensor, global_scale: torch.Tensor | float | None = None) -> Nvfp4Tensor:
    """Quantize `x` (..., K) with K a multiple of 16. Computes in float32."""
    if x.shape[-1] % BLOCK:
        raise ValueError(f"last dimension {x.shape[-1]} is not a multiple of {BLOCK}")
    xf = x.to(torch.float32)
    if global_scale is None:
        gs = global_scale_for(xf)
    else:
        gs = torch.as_tensor(global_scale, dtype=torch.float32, device=x.device)
    blocks = xf.reshape(*xf.shape[:-1], xf.shape[-1] // BLOCK, BLOCK)
    bamax = blocks.abs().amax(dim=-1)
    scale = (bamax / E2M1_MAX * gs).clamp(max=E4M3_MAX).to(torch.float8_e4m3fn)
    dec = scale.to(torch.float32) / gs  # the scale the hardware multiplies by
    safe = torch.where(dec == 0, torch.ones_like(dec), dec)
    v = torch.where(dec[..., None] == 0, torch.zeros_like(blocks), blocks / safe[..., None])
    codes = e2m1_codes(v).reshape(xf.shape)
    return Nvfp4Tensor(packed=pack(codes), block_scale=scale, global_scale=gs, shape=tuple(x.shape))


def dequantize(q: Nvfp4Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    vals = e2m1_decode(unpack(q.packed))
    k = vals.shape[-1]
    blocks = vals.reshape(*vals.shape[:-1], k // BLOCK, BLOCK)
    wide = torch.float64 if dtype == torch.float64 else torch.float32
    s = q.block_scale.to(wide) / q.global_scale.to(wide)
    return (blocks.to(wide) * s[..., None]).reshape(q.shape).to(dtype)


def to_blocked(scales: torch.Tensor) -> torch.Tensor:
    """Linear (rows, cols) block scales -> the 128x4 swizzled layout cuBLAS / CUTLASS read, flattened.

    Rows are padded to a multiple of 128 and columns to a multiple of 4 with zeros; each 128x4 tile is
    stored as 32 rows of (4 sub-rows x 4 columns): element (r, c) of a tile goes to
    offset (r % 32) * 16 + (r // 32) * 4 + c (cuBLAS "1D block scaling factors layout").
    """
    rows, cols = scales.shape
    pr, pc = -(-rows // 128) * 128, -(-cols // 4) * 4
    padded = torch.zeros((pr, pc), dtype=scales.dtype, device=scales.device)
    padded[:rows, :cols] = scales
    tiles = padded.view(pr // 128, 128, pc // 4, 4).permute(0, 2, 1, 3)  # (rb, cb, 128, 4)
    tiles = tiles.reshape(-1, 4, 32, 4).transpose(1, 2)  # r = i*32 + j -> (j, i, c)
    return tiles.reshape(-1).contiguous()


def from_blocked(flat: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Inverse of to_blocked: the swizzled layout back to linear (rows, cols)."""
    pr, pc = -(-rows // 128) * 128, -(-cols // 4) * 4
    t = flat.reshape(-1)[: pr * pc].reshape(pr // 128, pc // 4, 32, 4, 4).transpose(2, 3)
    t = t.reshape(pr // 128, pc // 4, 128, 4).permute(0, 2, 1, 3).reshape(pr, pc)
    return t[:rows, :cols].contiguous()


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref||_F / ||ref||_F in float64; NaN/Inf anywhere gives inf (never passes a band)."""
    o, r = out.to(torch.float64), ref.to(torch.float64)
    if not bool(torch.isfinite(o).all()):
        return float("inf")
    den = torch.linalg.vector_norm(r)
    return float(torch.linalg.vector_norm(o - r) / (den if den > 0 else 1.0))
