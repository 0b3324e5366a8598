"""Equivariant building blocks written as few large array ops (XLA compiles and runs them quickly).

e3nn-jax's ``tensor_product`` and ``gate`` emit one small operation per path/chunk; a network built from
them compiles for minutes on a CPU. The functions here compute the same kind of quantities with one
einsum per input irrep type and precomputed constant tensors. Layout changes are permutations applied
by ``permute_last``, whose gradient is the inverse permutation (a gather) rather than the scatter-add
JAX emits for a general gather, which is slow on CPUs.
Features are ``e3nn.IrrepsArray`` in the standard-harmonic basis (see hamflow.nn.radial.to_e3nn_axes).
Index arrays kept in caches are int32: JAX keeps the converted constant of a cached int64 numpy index
and then fails when jax_enable_x64 is switched between traces.
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


@functools.cache
def _permutation(key: bytes):
    """The custom-VJP function x -> x[..., perm] for the int32 permutation stored in ``key``."""
    perm = np.frombuffer(key, dtype=np.int32).copy()
    inverse = np.argsort(perm).astype(np.int32)

    @jax.custom_vjp
    def apply(x):
        return x[..., perm]

    def forward(x):
        return x[..., perm], None

    def backward(_, cotangent):
        return (cotangent[..., inverse],)

    apply.defvjp(forward, backward)
    return apply


def permute_last(x: jnp.ndarray, perm: np.ndarray) -> jnp.ndarray:
    """x[..., perm] for a permutation ``perm`` of the last axis; its gradient is a gather too."""
    perm = np.asarray(perm, dtype=np.int32)
    if len(perm) != x.shape[-1] or not np.array_equal(np.sort(perm), np.arange(len(perm))):
        raise ValueError(f"not a permutation of the last axis (size {x.shape[-1]})")
    if np.array_equal(perm, np.arange(len(perm))):
        return x
    return _permutation(perm.tobytes())(x)


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
    scalars = irreps_out.filter(keep=["0e", "0o"])
    nonscalars = irreps_out.filter(drop=["0e", "0o"])
    array = x.array
    pieces = []
    offset = 0
    for mul, ir in scalars:
        block = array[..., offset : offset + mul]
        if ir.p == 1:
            pieces.append(_SILU_SCALE * jax.nn.silu(block))
        else:
            pieces.append(_TANH_SCALE * jnp.tanh(block))
        offset += mul
    gates = _SIGMOID_SCALE * jax.nn.sigmoid(array[..., offset : offset + nonscalars.num_irreps])
    offset += nonscalars.num_irreps
    gate_offset = 0
    for mul, ir in nonscalars:
        chunk = array[..., offset : offset + mul * ir.dim].reshape(*array.shape[:-1], mul, ir.dim)
        gated = chunk * gates[..., gate_offset : gate_offset + mul, None]
        pieces.append(gated.reshape(*array.shape[:-1], mul * ir.dim))
        offset += mul * ir.dim
        gate_offset += mul
    return e3nn.IrrepsArray(irreps_out, jnp.concatenate(pieces, axis=-1))


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
    distinct (ir_x, ir_y, ir_out) triples (the order of ``path_weights``).
    """

    irreps_out: e3nn.Irreps
    channel: np.ndarray
    path: np.ndarray
    path_types: tuple


class _ChunkPlan(NamedTuple):
    index: int  # chunk of x
    channel_start: int  # its first irrep copy among all of x
    cg: np.ndarray  # (2lx+1, dim_y, K)
    path_onehot: np.ndarray  # (number of path types, K): the path type of each column


@functools.cache
def _product_plan(irreps_x: e3nn.Irreps, irreps_y: e3nn.Irreps, allowed: frozenset):
    """Chunk plans, the output layout, and the permutation from the stacked products to the layout.

    The products of chunk (mul, ir_x) are (mul, K) flattened; concatenated over chunks, one
    permutation puts them path-major per chunk ((mul, dim_out) blocks) and regroups the result.
    """
    per_chunk, out_irreps, channels, paths, order = [], [], [], [], []
    path_types: dict = {}
    channel_start, flat_offset = 0, 0
    for index, (mul, ir_x) in enumerate(irreps_x):
        cg, chunk_paths = _paths(ir_x, irreps_y, allowed)
        if chunk_paths:
            k_offset, columns = 0, []
            for ir_y, ir_out in chunk_paths:
                block = np.arange(mul)[:, None] * cg.shape[-1] + k_offset + np.arange(ir_out.dim)
                order.append(flat_offset + block.ravel())
                out_irreps.append((mul, ir_out))
                path_id = path_types.setdefault((ir_x, ir_y, ir_out), len(path_types))
                columns += [path_id] * ir_out.dim
                channels.append(np.repeat(channel_start + np.arange(mul), ir_out.dim))
                paths.append(np.full(mul * ir_out.dim, path_id))
                k_offset += ir_out.dim
            per_chunk.append((index, channel_start, cg, np.array(columns)))
            flat_offset += mul * cg.shape[-1]
        channel_start += mul
    plans = [
        _ChunkPlan(index, start, cg, (np.arange(len(path_types))[:, None] == columns[None, :]).astype(float))
        for index, start, cg, columns in per_chunk
    ]
    sorted_irreps, index = regroup_index(e3nn.Irreps(out_irreps))
    inverse = np.argsort(index)
    empty = np.zeros(0, dtype=np.int64)
    layout = ProductLayout(
        irreps_out=sorted_irreps,
        channel=(np.concatenate(channels) if channels else empty)[inverse].astype(np.int32),
        path=(np.concatenate(paths) if paths else empty)[inverse].astype(np.int32),
        path_types=tuple(path_types),
    )
    permutation = (np.concatenate(order) if order else empty)[inverse].astype(np.int32)
    return plans, layout, permutation


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
    x: e3nn.IrrepsArray,
    y: e3nn.IrrepsArray,
    filter_ir_out: e3nn.Irreps | None = None,
    *,
    channel_weights: jnp.ndarray | None = None,
    path_weights: jnp.ndarray | None = None,
) -> e3nn.IrrepsArray:
    """Channel-wise tensor product of x (..., irreps_x, any multiplicities) with y (..., mul-1 irreps).

    Every channel c of x meets every irrep of y: out = (x_c (x) y) -> ir_out for each allowed path,
    the 'uvu' product of e3nn with a shared y (e.g. the spherical harmonics of an edge). Output irreps:
    mul x ir_out for each chunk (mul, ir_x) of x and each path, regrouped (sorted by irrep, stable);
    see product_layout. Optional invariant weights scale every output channel by
    channel_weights[..., c] (shape (..., num_irreps(x))) times path_weights[..., p] (shape
    (..., number of path types)); they are folded into the operands at no extra cost.
    Cost per x chunk: one einsum y . CG (channel independent) and one einsum with the channels.
    """
    plans, layout, permutation = _product_plan(
        x.irreps, y.irreps, _allowed(x.irreps, y.irreps, filter_ir_out)
    )
    if not plans:
        return e3nn.zeros(e3nn.Irreps(""), x.shape[:-1], x.dtype)
    pieces = []
    for plan in plans:
        mul, ir_x = x.irreps[plan.index]
        chunk = x.chunks[plan.index]
        if chunk is None:
            chunk = jnp.zeros((*x.shape[:-1], mul, ir_x.dim), x.dtype)
        if channel_weights is not None:
            chunk = chunk * channel_weights[..., plan.channel_start : plan.channel_start + mul, None]
        mixed = jnp.einsum("...j,ijk->...ik", y.array, jnp.asarray(plan.cg, dtype=y.array.dtype))
        if path_weights is not None:
            column_weights = path_weights @ jnp.asarray(plan.path_onehot, dtype=path_weights.dtype)
            mixed = mixed * column_weights[..., None, :]
        products = jnp.einsum("...ci,...ik->...ck", chunk, mixed.astype(chunk.dtype))
        pieces.append(products.reshape(*products.shape[:-2], -1))
    stacked = jnp.concatenate(pieces, axis=-1)
    return e3nn.IrrepsArray(layout.irreps_out, permute_last(stacked, permutation))


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
    """x with its irreps sorted and merged (like ``IrrepsArray.regroup``) in one permutation."""
    sorted_irreps, index = regroup_index(x.irreps)
    if sorted_irreps == x.irreps:
        return x
    return e3nn.IrrepsArray(sorted_irreps, permute_last(x.array, np.argsort(index)))


class EquivariantLayerNorm(nn.Module):
    """Separable equivariant normalisation of features x (..., irreps).

    Even scalars are centred and divided by their root mean square over channels; all other irreps
    together are divided by one root mean square, mean over their irreps of |x_c|^2 / (2l+1). Each
    irrep copy c then gets a learnable scale (1 + s_c), and even scalars a bias b_c (s, b start at 0).
    Scales multiply whole irreps, so the map is equivariant (and parity-preserving). One common norm
    for the non-scalars (not one per irrep type) keeps a chunk that is zero by symmetry (e.g.
    pseudovectors of a linear molecule: pure rounding noise in float32) from being blown up to O(1).
    """

    eps: float = 1e-5

    @nn.compact
    def __call__(self, x: e3nn.IrrepsArray) -> e3nn.IrrepsArray:
        even_scalar = e3nn.Irrep("0e")
        chunks = [
            jnp.zeros((*x.shape[:-1], mul, ir.dim), x.dtype) if chunk is None else chunk
            for (mul, ir), chunk in zip(x.irreps, x.chunks, strict=True)
        ]
        others = [
            (chunk, mul) for (mul, ir), chunk in zip(x.irreps, chunks, strict=True) if ir != even_scalar
        ]
        if others:
            total = sum(jnp.sum(chunk**2, axis=(-2, -1)) / chunk.shape[-1] for chunk, _ in others)
            other_scale = jax.lax.rsqrt(total / sum(mul for _, mul in others) + self.eps)
        normalised = []
        for index, ((mul, ir), chunk) in enumerate(zip(x.irreps, chunks, strict=True)):
            if ir == even_scalar:
                chunk = chunk - jnp.mean(chunk, axis=-2, keepdims=True)
                chunk = chunk * jax.lax.rsqrt(jnp.mean(chunk**2, axis=(-2, -1)) + self.eps)[..., None, None]
            else:
                chunk = chunk * other_scale[..., None, None]
            scale = 1.0 + self.param(f"scale_{index}_{ir}", nn.initializers.zeros, (mul,), jnp.float32)
            chunk = chunk * scale.astype(chunk.dtype)[:, None]
            if ir == even_scalar:
                bias = self.param(f"bias_{index}_{ir}", nn.initializers.zeros, (mul,), jnp.float32)
                chunk = chunk + bias.astype(chunk.dtype)[:, None]
            normalised.append(chunk)
        return e3nn.from_chunks(x.irreps, normalised, x.shape[:-1], x.dtype)
