"""Equivariant building blocks written as few large array ops (XLA compiles them quickly).

e3nn-jax's ``tensor_product`` and ``gate`` emit one small operation per path/chunk; a network built from
them compiles for minutes on a CPU. The functions here compute the same kind of quantities with one
einsum per input irrep type and one gather for the layout, with precomputed constant tensors.
Features are ``e3nn.IrrepsArray`` in the standard-harmonic basis (see hamflow.nn.radial.to_e3nn_axes).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import e3nn_jax as e3nn
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def _second_moment_scale(function) -> float:
    """1 / sqrt(E[f(z)^2]) for z ~ N(0, 1) (Gauss-Hermite quadrature), so f keeps unit variance."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(100)
    return float(1.0 / np.sqrt(np.sum(weights * function(nodes) ** 2) / np.sqrt(2.0 * np.pi)))


_SILU_SCALE = _second_moment_scale(lambda z: z / (1.0 + np.exp(-z)))
_TANH_SCALE = _second_moment_scale(np.tanh)
_SIGMOID_SCALE = _second_moment_scale(lambda z: 1.0 / (1.0 + np.exp(-z)))


def gate_input_irreps(irreps: e3nn.Irreps) -> e3nn.Irreps:
    """Irreps to feed ``gate`` so that it returns ``irreps``: scalars, one 0e gate per non-scalar, rest.

    ``irreps`` must be regrouped (scalars first).
    """
    scalars = irreps.filter(keep=["0e", "0o"])
    nonscalars = irreps.filter(drop=["0e", "0o"])
    gates = e3nn.Irreps(f"{nonscalars.num_irreps}x0e") if nonscalars.num_irreps else e3nn.Irreps("")
    return scalars + gates + nonscalars


def gate(x: e3nn.IrrepsArray, irreps_out: e3nn.Irreps) -> e3nn.IrrepsArray:
    """Gated nonlinearity: x (..., gate_input_irreps(irreps_out)) -> (..., irreps_out).

    Even scalars get silu, odd scalars tanh (odd, so parity is kept), each non-scalar irrep is scaled
    by the sigmoid of its own gate scalar; activations are normalised to unit second moment.
    """
    scalars_dim = irreps_out.filter(keep=["0e", "0o"]).dim
    nonscalars = irreps_out.filter(drop=["0e", "0o"])
    array = x.array
    pieces = []
    offset = 0
    for mul, ir in irreps_out.filter(keep=["0e", "0o"]):
        block = array[..., offset : offset + mul]
        if ir.p == 1:
            pieces.append(_SILU_SCALE * jax.nn.silu(block))
        else:
            pieces.append(_TANH_SCALE * jnp.tanh(block))
        offset += mul
    if nonscalars.num_irreps:
        gates = _SIGMOID_SCALE * jax.nn.sigmoid(array[..., scalars_dim : scalars_dim + nonscalars.num_irreps])
        owner = np.concatenate(
            [np.repeat(np.arange(mul), ir.dim) + start for (mul, ir), start in _chunk_starts(nonscalars)]
        )
        pieces.append(array[..., scalars_dim + nonscalars.num_irreps :] * gates[..., owner])
    return e3nn.IrrepsArray(irreps_out, jnp.concatenate(pieces, axis=-1))


def _chunk_starts(irreps: e3nn.Irreps) -> list[tuple[tuple[int, e3nn.Irrep], int]]:
    """Each (mul, ir) of irreps with the index of its first irrep among all irreps of ``irreps``."""
    starts, count = [], 0
    for mul, ir in irreps:
        starts.append(((mul, ir), count))
        count += mul
    return starts


def channel_weights_index(irreps: e3nn.Irreps) -> np.ndarray:
    """(dim,) index of the irrep (channel) owning each component: w[..., index] expands (num_irreps,)."""
    return np.concatenate(
        [np.repeat(np.arange(mul), ir.dim) + start for (mul, ir), start in _chunk_starts(irreps)]
        or [np.zeros(0, dtype=np.int64)]
    )


@functools.cache
def _paths(ir_x: e3nn.Irrep, irreps_y: e3nn.Irreps, allowed: frozenset) -> tuple[np.ndarray, list]:
    """Dense CG tensor (2lx+1, dim_y, K) of every allowed path ir_x (x) ir_y -> ir_out, and the paths.

    Each path's slice is sqrt(2 l_out + 1) * clebsch_gordan (component normalisation); paths are
    (ir_y, ir_out) in the order of their K slices.
    """
    blocks, paths = [], []
    y_offset = 0
    for mul_y, ir_y in irreps_y:
        if mul_y != 1:
            raise ValueError(f"second operand must have multiplicity 1 per irrep, got {irreps_y}")
        for ir_out in ir_x * ir_y:
            if ir_out not in allowed:
                continue
            cg = np.sqrt(ir_out.dim) * np.asarray(e3nn.clebsch_gordan(ir_x.l, ir_y.l, ir_out.l), np.float64)
            full = np.zeros((ir_x.dim, irreps_y.dim, ir_out.dim))
            full[:, y_offset : y_offset + ir_y.dim, :] = cg
            blocks.append(full)
            paths.append((ir_y, ir_out))
        y_offset += ir_y.dim
    if not blocks:
        return np.zeros((ir_x.dim, irreps_y.dim, 0)), []
    return np.concatenate(blocks, axis=-1), paths


class ProductLayout(NamedTuple):
    """Where each output component of tensor_product_mul1 comes from.

    irreps_out: the regrouped output irreps. channel: (dim_out,) index of the x irrep copy (0 ..
    num_irreps(x) - 1) each component is made from. path: (dim_out,) index into path_types, the
    distinct (ir_x, ir_y, ir_out) triples. Per-channel and per-path weights expand with these indices.
    """

    irreps_out: e3nn.Irreps
    channel: np.ndarray
    path: np.ndarray
    path_types: tuple


@functools.cache
def _product_plan(irreps_x: e3nn.Irreps, irreps_y: e3nn.Irreps, allowed: frozenset):
    """Per x chunk (chunk index, CG tensor, gather order), the output layout and the regroup gather."""
    chunk_plans, out_irreps, channels, paths, path_types = [], [], [], [], {}
    channel_start = 0
    for index, (mul, ir_x) in enumerate(irreps_x):
        cg, chunk_paths = _paths(ir_x, irreps_y, allowed)
        order, k_offset = [], 0
        for ir_y, ir_out in chunk_paths:
            # (mul, K) -> per path a (mul, dim_out) block, laid out path after path.
            order.append((np.arange(mul)[:, None] * cg.shape[-1] + k_offset + np.arange(ir_out.dim)).ravel())
            out_irreps.append((mul, ir_out))
            path_id = path_types.setdefault((ir_x, ir_y, ir_out), len(path_types))
            channels.append(np.repeat(channel_start + np.arange(mul), ir_out.dim))
            paths.append(np.full(mul * ir_out.dim, path_id))
            k_offset += ir_out.dim
        if chunk_paths:
            chunk_plans.append((index, cg, np.concatenate(order).astype(np.int32)))
        channel_start += mul
    unsorted = e3nn.Irreps(out_irreps)
    sorted_irreps, index = regroup_index(unsorted)
    inverse = np.empty_like(index)
    inverse[index] = np.arange(len(index))
    empty = np.zeros(0, dtype=np.int64)
    # int32 indices: these arrays are cached, and JAX keeps the converted constant of a cached int64
    # index, which then fails when jax_enable_x64 is switched between traces.
    layout = ProductLayout(
        irreps_out=sorted_irreps,
        channel=(np.concatenate(channels) if channels else empty)[inverse].astype(np.int32),
        path=(np.concatenate(paths) if paths else empty)[inverse].astype(np.int32),
        path_types=tuple(path_types),
    )
    return chunk_plans, layout, inverse.astype(np.int32)


def _allowed(irreps_x: e3nn.Irreps, irreps_y: e3nn.Irreps, filter_ir_out) -> frozenset:
    if filter_ir_out is not None:
        return frozenset(ir for _, ir in e3nn.Irreps(filter_ir_out))
    return frozenset(out for _, ir_x in irreps_x for _, ir_y in irreps_y for out in ir_x * ir_y)


def product_layout(
    irreps_x: e3nn.Irreps, irreps_y: e3nn.Irreps, filter_ir_out: e3nn.Irreps | None = None
) -> ProductLayout:
    """The ProductLayout of tensor_product_mul1 for these operand irreps (no arrays needed)."""
    irreps_x, irreps_y = e3nn.Irreps(irreps_x), e3nn.Irreps(irreps_y)
    return _product_plan(irreps_x, irreps_y, _allowed(irreps_x, irreps_y, filter_ir_out))[1]


def tensor_product_mul1(
    x: e3nn.IrrepsArray, y: e3nn.IrrepsArray, filter_ir_out: e3nn.Irreps | None = None
) -> e3nn.IrrepsArray:
    """Channel-wise tensor product of x (..., irreps_x, any multiplicities) with y (..., mul-1 irreps).

    Every channel c of x meets every irrep of y: out = (x_c (x) y) -> ir_out for each allowed path,
    the 'uvu' product of e3nn with a shared y (e.g. the spherical harmonics of an edge). Output irreps:
    mul x ir_out for each chunk (mul, ir_x) of x and each path, regrouped (sorted by irrep, stable);
    see product_layout. Cost per x chunk: one einsum y . CG (channel independent) and one einsum
    with the channels, then one gather for the whole layout.
    """
    chunk_plans, layout, inverse = _product_plan(
        x.irreps, y.irreps, _allowed(x.irreps, y.irreps, filter_ir_out)
    )
    if not chunk_plans:
        return e3nn.zeros(e3nn.Irreps(""), x.shape[:-1], x.dtype)
    pieces = []
    for index, cg, order in chunk_plans:
        mul, ir_x = x.irreps[index]
        chunk = x.chunks[index]
        if chunk is None:
            chunk = jnp.zeros((*x.shape[:-1], mul, ir_x.dim), x.dtype)
        mixed = jnp.einsum("...j,ijk->...ik", y.array, jnp.asarray(cg, dtype=y.array.dtype))
        products = jnp.einsum("...ci,...ik->...ck", chunk, mixed.astype(chunk.dtype))
        flat = products.reshape(*products.shape[:-2], mul * cg.shape[-1])
        pieces.append(flat[..., order])
    return e3nn.IrrepsArray(layout.irreps_out, jnp.concatenate(pieces, axis=-1)[..., inverse])


def regroup_index(irreps: e3nn.Irreps) -> tuple[e3nn.Irreps, np.ndarray]:
    """(sorted irreps, index) with x_in_irreps_order = x_sorted[..., index] (stable within a type)."""
    types = sorted({ir for _, ir in irreps})
    counts = {ir: 0 for ir in types}
    for mul, ir in irreps:
        counts[ir] += mul
    starts, offset = {}, 0
    for ir in types:
        starts[ir] = offset
        offset += counts[ir] * ir.dim
    seen = {ir: 0 for ir in types}
    index = []
    for mul, ir in irreps:
        first = starts[ir] + seen[ir] * ir.dim
        index.append(np.arange(first, first + mul * ir.dim))
        seen[ir] += mul
    sorted_irreps = e3nn.Irreps([(counts[ir], ir) for ir in types])
    return sorted_irreps, (np.concatenate(index) if index else np.zeros(0, dtype=np.int64))


def regroup(x: e3nn.IrrepsArray) -> e3nn.IrrepsArray:
    """x with its irreps sorted and merged (like ``IrrepsArray.regroup``) using a single gather."""
    sorted_irreps, index = regroup_index(x.irreps)
    if sorted_irreps == x.irreps:
        return x
    inverse = np.empty_like(index)
    inverse[index] = np.arange(len(index))
    return e3nn.IrrepsArray(sorted_irreps, x.array[..., inverse])


class EquivariantLayerNorm(nn.Module):
    """Per-irrep-type normalisation: each chunk (mul, ir) of x divided by its channel-mean square.

    For every chunk, x_c <- (1 + s_c) x_c / sqrt(mean_c(|x_c|^2) / (2l+1) + eps), with even scalars
    first centred over their channels and given a bias b_c. Scales multiply whole irreps, so the map is
    equivariant (and parity-preserving). Parameters s, b start at zero (identity scale, no bias).
    """

    eps: float = 1e-5

    @nn.compact
    def __call__(self, x: e3nn.IrrepsArray) -> e3nn.IrrepsArray:
        chunks = []
        for index, ((mul, ir), chunk) in enumerate(zip(x.irreps, x.chunks, strict=True)):
            if chunk is None:
                chunks.append(None)
                continue
            if ir == e3nn.Irrep("0e"):
                chunk = chunk - jnp.mean(chunk, axis=-2, keepdims=True)
            mean_square = jnp.mean(jnp.sum(chunk**2, axis=-1), axis=-1) / ir.dim
            chunk = chunk * jax.lax.rsqrt(mean_square + self.eps)[..., None, None]
            scale = 1.0 + self.param(f"scale_{index}_{ir}", nn.initializers.zeros, (mul,), jnp.float32)
            chunk = chunk * scale.astype(chunk.dtype)[:, None]
            if ir == e3nn.Irrep("0e"):
                bias = self.param(f"bias_{index}_{ir}", nn.initializers.zeros, (mul,), jnp.float32)
                chunk = chunk + bias.astype(chunk.dtype)[:, None]
            chunks.append(chunk)
        return e3nn.from_chunks(x.irreps, chunks, x.shape[:-1], x.dtype)
