"""The 4-bit weight grids of the formats LMs are served in, computed exactly as their writers compute them, so that
a model trained through them (quantization-aware distillation, ``qad.py``) exports without a rounding step that
moves a weight:

- ``int4``: compressed-tensors' symmetric W4A16 (what vLLM serves; ``gptq-w4a16``'s scheme). Per output row, groups
  of ``group_size`` input columns share one scale ``absmax / 7.5`` held in ``scale_dtype`` (the checkpoint's
  dtype); a weight is ``clamp(round(w / scale), -8, 7)`` (round half to even), read back as
  ``(q in scale_dtype) * scale`` (compressed-tensors 0.19, ``calculate_qparams`` and ``dequantize``). Not
  idempotent: re-deriving scales from weights already on the grid moves them, so the exporter writes the scales and
  integers of this module, not a re-quantization.
- ``q4_0``: GGUF's Q4_0 (llama.cpp's ``quantize_row_q4_0_ref``). Blocks of 32 input columns; ``d = m / -8`` where
  ``m`` is the block's value of largest magnitude, stored as fp16; ``q = min(15, trunc(w / d + 8.5))``, read back
  as ``(q - 8) * d``. Idempotent: a block already on the grid quantizes to itself, so llama-quantize (without an
  importance matrix, which switches to another search) reproduces a trained model exactly.

``fake_quantize`` gives the read-back weights with a straight-through gradient (the rounding's gradient taken as
the identity), which is what training through the grid uses. ``learned_fake_quantize`` (int4 only) does the same on
scales that are trained too, with LSQ's gradient (Esser et al., 2020; EfficientQAT trains the same step sizes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import HfCompressError

Q4_0_BLOCK = 32


@dataclass(frozen=True)
class Grid:
    """One 4-bit grid: ``kind`` 'int4' (compressed-tensors, ``group_size`` and ``scale_dtype``) or 'q4_0'."""

    kind: str
    group_size: int = Q4_0_BLOCK
    scale_dtype: torch.dtype = torch.float16

    def __post_init__(self):
        if self.kind not in ("int4", "q4_0"):
            raise HfCompressError(f"grid kind must be 'int4' or 'q4_0', got {self.kind!r}")
        if self.kind == "q4_0" and (self.group_size, self.scale_dtype) != (Q4_0_BLOCK, torch.float16):
            raise HfCompressError("GGUF Q4_0 has blocks of 32 with fp16 scales; group_size and scale_dtype are fixed")
        if self.group_size < 1:
            raise HfCompressError(f"group_size must be >= 1, got {self.group_size}")

    def check_width(self, name: str, columns: int) -> None:
        if columns % self.group_size:
            raise HfCompressError(
                f"{name} has {columns} input columns, which the {self.kind} grid's groups of {self.group_size} don't "
                "divide"
            )


def _groups(weight: torch.Tensor, size: int) -> torch.Tensor:
    rows, columns = weight.shape
    return weight.reshape(rows, columns // size, size)


def quantize_weight(
    weight: torch.Tensor, grid: Grid, scale: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(q, scale)`` of a 2-D weight on ``grid``: integers ``(rows, columns)`` in int8 (int4: -8..7; q4_0: 0..15)
    and one scale per group ``(rows, columns / group)`` in the grid's scale dtype. No gradient. ``scale`` (int4
    only): fixed scales to round onto (a GPTQ start's) instead of each group's ``absmax / 7.5``."""
    w = _groups(weight.detach(), grid.group_size)
    if scale is not None and (grid.kind != "int4" or scale.shape != w.shape[:2] or scale.dtype != grid.scale_dtype):
        raise HfCompressError(
            f"fixed scales need the int4 grid and shape {tuple(w.shape[:2])} in {grid.scale_dtype}; got "
            f"{grid.kind}, {tuple(scale.shape)} in {scale.dtype}"
        )
    if grid.kind == "int4":
        if scale is None:
            absmax = w.abs().amax(-1)
            scale = (absmax / 7.5).to(grid.scale_dtype)
            eps = torch.tensor(torch.finfo(grid.scale_dtype).eps, dtype=scale.dtype)
            scale = torch.where(scale == 0, eps, scale)
        q = torch.clamp(torch.round(w / scale.to(w.dtype)[..., None]), -8, 7)
        return q.to(torch.int8).reshape(weight.shape), scale
    w32 = w.float()
    signed_max = w32.gather(-1, w32.abs().argmax(-1, keepdim=True))  # the first of equal magnitudes, as ggml
    d = signed_max / -8
    inverse = torch.where(d == 0, torch.zeros_like(d), 1 / d)
    q = torch.clamp(torch.trunc(w32 * inverse + 8.5), 0, 15)
    return q.to(torch.int8).reshape(weight.shape), d[..., 0].to(torch.float16)


def dequantize_weight(q: torch.Tensor, scale: torch.Tensor, grid: Grid, dtype: torch.dtype) -> torch.Tensor:
    """The weight the format's reader computes from ``(q, scale)``, in ``dtype``."""
    groups = _groups(q, grid.group_size)
    if grid.kind == "int4":
        values = groups.to(scale.dtype) * scale[..., None]
    else:
        values = (groups.float() - 8) * scale.float()[..., None]
    return values.reshape(q.shape).to(dtype)


def fake_quantize(weight: torch.Tensor, grid: Grid, scale: torch.Tensor | None = None) -> torch.Tensor:
    """``weight`` as the format reads it back (on fixed int4 ``scale`` if given), with a straight-through gradient
    to ``weight``."""
    q, scale = quantize_weight(weight, grid, scale)
    rounded = dequantize_weight(q, scale, grid, weight.dtype)
    return weight + (rounded - weight).detach()


def smallest_scale(dtype: torch.dtype) -> float:
    """The least a trained scale may become: 1e-8, or ``dtype``'s smallest subnormal where that is larger (fp16).
    It keeps a scale positive and ``w / scale`` finite, below any scale a real weight group has (the dtype's eps,
    compressed-tensors' stand-in for a zero scale, is 2^-7 in bf16: above many real scales)."""
    info = torch.finfo(dtype)
    return max(1e-8, info.tiny * info.eps)


def stored_scale(scale: torch.Tensor, grid: Grid) -> torch.Tensor:
    """A trained int4 scale as the checkpoint holds it: in the scale dtype, and positive."""
    return torch.clamp(scale.detach(), min=smallest_scale(grid.scale_dtype)).to(grid.scale_dtype)


def learned_fake_quantize(weight: torch.Tensor, scale: torch.Tensor, grid: Grid) -> torch.Tensor:
    """``weight`` read back from the int4 ``grid`` on the trainable ``scale`` (fp32, one per group): forward, exactly
    ``dequantize_weight(*quantize_weight(weight, grid, stored_scale(scale, grid)), grid, weight.dtype)``; backward,
    LSQ's gradients: to a weight, 1 where it rounds inside -8..7 and 0 where it clamps; to a scale, the sum over its
    group of ``q - w / scale`` inside and the clamped ``q`` outside. The scale's rounding to its dtype and the
    read-back's are passed straight through."""
    if grid.kind != "int4":
        raise HfCompressError(f"learned scales are for the int4 grid; {grid.kind} derives its scales from the weights")
    s = torch.clamp(scale, min=smallest_scale(grid.scale_dtype))
    s = s + (s.to(grid.scale_dtype).to(s.dtype) - s).detach()  # the stored value, gradient straight through
    w = _groups(weight, grid.group_size)
    x = w / s.to(w.dtype)[..., None]
    q = torch.clamp(x + (torch.round(x) - x).detach(), -8, 7)
    values = q * s.to(w.dtype)[..., None]
    values = values + (values.to(grid.scale_dtype).to(values.dtype) - values).detach()  # read back in scale dtype
    return values.reshape(weight.shape)
