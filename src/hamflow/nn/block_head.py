"""The Clebsch-Gordan block head: irreps <-> (2l1+1)x(2l2+1) orbital blocks, and the whole-basis readout.

Wigner-Eckart: the block of a shell pair (l1, l2) decomposes into irreps L = |l1-l2|..l1+l2 with

    H[m1, m2] = sum_L sqrt(2L+1) sum_M C^{l1 l2 L}[m1, m2, M] x^L[M]

(C = ``e3nn.clebsch_gordan``, Frobenius norm 1, so this map is orthogonal and its inverse is its
transpose). Features x^L in the standard real-harmonic basis (the network feeds e3nn the (y, z, x)
reordered vectors) give blocks in the standard DeepH m order, and D_l1(R) H D_l2(R)^T = H(R .) exactly.

A common basis is ``shell_ls``: the l of every shell in order (e.g. (0, 0, 0, 1, 1, 2, 2) for s3p2d2),
B = sum(2l+1) orbitals. Its shell pairs (a, b) are taken row-major (a over shells, then b).

Spinful blocks come in two readouts. With spin-orbit coupling (``spin_orbit``, the default for spinful
data) the (2B, 2B) block [[uu, ud], [du, dd]] is written H = H0 (x) 1 + i sum_k T_k (x) sigma_k
(spin outer, orbitals inner; sigma the Pauli matrices, k = x, y, z): under a rotation R with spin
matrix U(R), (U (x) D1) H (U (x) D2)^dagger keeps H0 an orbital block and turns (T_x, T_y, T_z) as a
vector, so H0 takes the block irreps L and T the irreps L' of L (x) 1, coupled by Clebsch-Gordan
coefficients (:func:`spin_vector_irreps`). H0 and T real make H time-reversal even,
sigma_y H* sigma_y = H, as it is for a non-magnetic system whose network sees only the geometry.
Without it (``spin_orbit = False``), each of uu, ud, du, dd is an independent orbital block (spin
treated as invariant: right for collinear-spin data, not covariant for spin-orbit-coupled data).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import e3nn_jax as e3nn
import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from hamflow.graph.irreps import check_net_irreps, readout_vector_irreps, spin_vector_ls
from hamflow.nn.layers import permute_last, regroup, regroup_index, tensor_product_mul1

# Order of the spinful copies in the readout: real and imaginary part of uu, ud, du, dd.
SPIN_COPIES = ("uu.real", "uu.imag", "ud.real", "ud.imag", "du.real", "du.imag", "dd.real", "dd.imag")


def block_irreps(l1: int, l2: int, *, parity: bool) -> e3nn.Irreps:
    """Irreps L = |l1-l2|..l1+l2 of a shell-pair block, parity (-1)^(l1+l2) when ``parity`` else even."""
    p = (-1) ** (l1 + l2) if parity else 1
    return e3nn.Irreps([(1, (L, p)) for L in range(abs(l1 - l2), l1 + l2 + 1)])


@functools.cache
def _cg_basis(l1: int, l2: int) -> np.ndarray:
    """(K, 2l1+1, 2l2+1) float64 orthonormal basis: K = (2l1+1)(2l2+1) irreps components -> block."""
    parts = [
        np.sqrt(2 * L + 1) * np.moveaxis(np.asarray(e3nn.clebsch_gordan(l1, l2, L), np.float64), -1, 0)
        for L in range(abs(l1 - l2), l1 + l2 + 1)
    ]
    return np.concatenate(parts, axis=0)


def _check_block_irreps(irreps: e3nn.Irreps, l1: int, l2: int) -> None:
    expected = list(range(abs(l1 - l2), l1 + l2 + 1))
    if [mul for mul, _ in irreps] != [1] * len(expected) or list(irreps.ls) != expected:
        raise ValueError(f"irreps {irreps} are not 1x L for L = {expected} (shell pair l1={l1}, l2={l2})")


def irreps_to_block(x: e3nn.IrrepsArray, l1: int, l2: int) -> jnp.ndarray:
    """Block (..., 2l1+1, 2l2+1) from irreps x (..., (2l1+1)(2l2+1)) with ls |l1-l2|..l1+l2 (mul 1 each)."""
    _check_block_irreps(x.irreps, l1, l2)
    basis = jnp.asarray(_cg_basis(l1, l2), dtype=x.array.dtype)
    return jnp.einsum("...k,kij->...ij", x.array, basis)


def block_to_irreps(block: jnp.ndarray, l1: int, l2: int, *, parity: bool = True) -> e3nn.IrrepsArray:
    """Irreps (..., (2l1+1)(2l2+1)) of a block (..., 2l1+1, 2l2+1); the inverse of irreps_to_block.

    ``parity`` only labels the result (parity (-1)^(l1+l2) or even); the numbers do not depend on it.
    """
    block = jnp.asarray(block)
    if block.shape[-2:] != (2 * l1 + 1, 2 * l2 + 1):
        raise ValueError(f"block shape {block.shape} does not end in ({2 * l1 + 1}, {2 * l2 + 1})")
    basis = jnp.asarray(_cg_basis(l1, l2), dtype=block.dtype)
    return e3nn.IrrepsArray(block_irreps(l1, l2, parity=parity), jnp.einsum("...ij,kij->...k", block, basis))


def spin_vector_irreps(l1: int, l2: int, *, parity: bool) -> e3nn.Irreps:
    """Irreps of the spin-vector part T (3 x (2l1+1) x (2l2+1) numbers) of a shell-pair block: for each
    L = |l1-l2|..l1+l2 the L' of L (x) 1, parity (-1)^(l1+l2) when ``parity`` (spin is axial) else even."""
    p = (-1) ** (l1 + l2) if parity else 1
    return e3nn.Irreps(
        [(1, (coupled, p)) for L in range(abs(l1 - l2), l1 + l2 + 1) for coupled in spin_vector_ls(L)]
    )


@functools.cache
def _spin_vector_basis(l1: int, l2: int) -> np.ndarray:
    """(K, 2l1+1, 2l2+1, 3) float64 orthonormal basis, K = 3 (2l1+1)(2l2+1): irreps L' -> T[m1, m2, k].

    T[m1, m2, k] = sum sqrt(2L+1) sqrt(2L'+1) C^{l1 l2 L}[m1, m2, M] C^{L 1 L'}[M, k, M'] x^{L'}[M'];
    k is the standard real-harmonic order of l = 1, (y, z, x) (see :func:`assemble_spin_vector_blocks`).
    """
    parts = []
    for L in range(abs(l1 - l2), l1 + l2 + 1):
        pair = np.asarray(e3nn.clebsch_gordan(l1, l2, L), np.float64)
        for coupled in spin_vector_ls(L):
            spin = np.asarray(e3nn.clebsch_gordan(L, 1, coupled), np.float64)
            weight = np.sqrt((2 * L + 1) * (2 * coupled + 1))
            parts.append(weight * np.einsum("abM,MkN->Nabk", pair, spin))
    return np.concatenate(parts, axis=0)


def output_irreps(shell_ls: Sequence[int], *, parity: bool) -> e3nn.Irreps:
    """Irreps of all shell-pair blocks of the basis, pairs row-major; total dimension B * B."""
    return e3nn.Irreps(
        [mul_ir for la in shell_ls for lb in shell_ls for mul_ir in block_irreps(la, lb, parity=parity)]
    )


def spin_vector_output_irreps(shell_ls: Sequence[int], *, parity: bool) -> e3nn.Irreps:
    """Irreps of the spin-vector parts of all shell-pair blocks, pairs row-major; dimension 3 B * B."""
    return e3nn.Irreps(
        [mul_ir for la in shell_ls for lb in shell_ls for mul_ir in spin_vector_irreps(la, lb, parity=parity)]
    )


@functools.cache
def _assembly_plan(
    shell_ls: tuple[int, ...], width: int = 1
) -> tuple[np.ndarray, list[tuple[int, int, int]], np.ndarray]:
    """Permutation of x to (l1, l2)-type-major order, the types (l1, l2, pairs), and the permutation
    from the stacked blocks to the row-major (B, B). ``width``: numbers of x per block entry (3 for
    the spin-vector part); the block permutation is the same for any width.

    Blocks of one type are produced by one einsum; their concatenation (types in order, each flattened
    pair-major, row-major inside a block) is permuted into the row-major (B, B). Both are permutations
    (see hamflow.nn.layers.permute_last); cached indices are int32.
    """
    shell_offsets = np.concatenate([[0], np.cumsum([2 * l + 1 for l in shell_ls])]).astype(int)
    size = int(shell_offsets[-1])
    by_type: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
    x_offset = 0
    for a, la in enumerate(shell_ls):
        for b, lb in enumerate(shell_ls):
            by_type.setdefault((la, lb), []).append((x_offset, a, b))
            x_offset += width * (2 * la + 1) * (2 * lb + 1)
    types, to_types = [], []
    to_blocks = np.empty(size * size, dtype=np.int32)
    position = 0
    for (la, lb), pairs in by_type.items():
        dim = (2 * la + 1) * (2 * lb + 1)
        types.append((la, lb, len(pairs)))
        for offset, a, b in pairs:
            to_types.append(np.arange(offset, offset + width * dim))
            rows = shell_offsets[a] + np.arange(2 * la + 1)
            cols = shell_offsets[b] + np.arange(2 * lb + 1)
            to_blocks[(rows[:, None] * size + cols[None, :]).ravel()] = position + np.arange(dim)
            position += dim
    return np.concatenate(to_types).astype(np.int32), types, to_blocks


def assemble_blocks(x: e3nn.IrrepsArray, shell_ls: Sequence[int]) -> jnp.ndarray:
    """The (..., B, B) block in the common basis from x (..., B*B) with irreps output_irreps(shell_ls)."""
    shell_ls = tuple(int(l) for l in shell_ls)
    expected = output_irreps(shell_ls, parity=False)
    if list(x.irreps.ls) != list(expected.ls) or x.irreps.dim != expected.dim:
        raise ValueError(f"irreps {x.irreps} do not match output_irreps of shells {shell_ls}")
    to_types, types, to_blocks = _assembly_plan(shell_ls)
    size = sum(2 * l + 1 for l in shell_ls)
    by_type = permute_last(x.array, to_types)
    pieces, offset = [], 0
    for la, lb, count in types:
        dim = (2 * la + 1) * (2 * lb + 1)
        chunk = by_type[..., offset : offset + count * dim].reshape(*x.shape[:-1], count, dim)
        basis = jnp.asarray(_cg_basis(la, lb), dtype=x.array.dtype)
        pieces.append(jnp.einsum("...pk,kij->...pij", chunk, basis).reshape(*x.shape[:-1], -1))
        offset += count * dim
    flat = permute_last(jnp.concatenate(pieces, axis=-1), to_blocks)
    return flat.reshape(*x.shape[:-1], size, size)


# Cartesian (x, y, z) from the standard real-harmonic order (y, z, x) of l = 1.
_CARTESIAN_FROM_STANDARD = (2, 0, 1)


def assemble_spin_vector_blocks(x: e3nn.IrrepsArray, shell_ls: Sequence[int]) -> jnp.ndarray:
    """The (..., 3, B, B) real spin-vector blocks (T_x, T_y, T_z) from x (..., 3 B*B) with irreps
    spin_vector_output_irreps(shell_ls); k Cartesian, in the frame of the data (the network's features
    are in the standard order, whose l = 1 is (y, z, x))."""
    shell_ls = tuple(int(l) for l in shell_ls)
    expected = spin_vector_output_irreps(shell_ls, parity=False)
    if list(x.irreps.ls) != list(expected.ls) or x.irreps.dim != expected.dim:
        raise ValueError(f"irreps {x.irreps} do not match spin_vector_output_irreps of shells {shell_ls}")
    to_types, types, to_blocks = _assembly_plan(shell_ls, 3)
    size = sum(2 * l + 1 for l in shell_ls)
    lead = x.shape[:-1]
    by_type = permute_last(x.array, to_types)
    pieces, offset = [], 0
    for la, lb, count in types:
        width = 3 * (2 * la + 1) * (2 * lb + 1)
        chunk = by_type[..., offset : offset + count * width].reshape(*lead, count, width)
        basis = jnp.asarray(_spin_vector_basis(la, lb), dtype=x.array.dtype)
        pieces.append(jnp.einsum("...pK,Kijc->...cpij", chunk, basis).reshape(*lead, 3, -1))
        offset += count * width
    flat = permute_last(jnp.concatenate(pieces, axis=-1), to_blocks)
    return flat.reshape(*lead, 3, size, size)[..., _CARTESIAN_FROM_STANDARD, :, :]


def assemble_spin_orbit_blocks(
    scalar: e3nn.IrrepsArray, vector: e3nn.IrrepsArray, shell_ls: Sequence[int]
) -> jnp.ndarray:
    """Complex (..., 2B, 2B) [[uu, ud], [du, dd]] = H0 (x) 1 + i sum_k T_k (x) sigma_k.

    ``scalar`` (..., B*B) with irreps output_irreps(shell_ls) gives H0; ``vector`` (..., 3 B*B) with
    irreps spin_vector_output_irreps(shell_ls) gives T (:func:`assemble_spin_vector_blocks`). So
    uu = H0 + i T_z, ud = T_y + i T_x, du = -T_y + i T_x, dd = H0 - i T_z. complex64 for float32 input.
    """
    h0 = assemble_blocks(scalar, shell_ls)
    t = assemble_spin_vector_blocks(vector, shell_ls)
    if h0.dtype not in (jnp.float32, jnp.float64):
        h0, t = h0.astype(jnp.float32), t.astype(jnp.float32)
    tx, ty, tz = t[..., 0, :, :], t[..., 1, :, :], t[..., 2, :, :]
    top = jnp.concatenate([h0 + 1j * tz, ty + 1j * tx], axis=-1)
    bottom = jnp.concatenate([-ty + 1j * tx, h0 - 1j * tz], axis=-1)
    return jnp.concatenate([top, bottom], axis=-2)


def assemble_spinful_blocks(x: e3nn.IrrepsArray, shell_ls: Sequence[int]) -> jnp.ndarray:
    """Complex (..., 2B, 2B) block [[uu, ud], [du, dd]] from x (..., 8, B*B), copies in SPIN_COPIES order.

    Each spin sub-block is an independent orbital block (spin treated as invariant: no spin-orbit
    coupling covariance). complex64 for float32 input, complex128 for float64.
    """
    if x.shape[-2] != len(SPIN_COPIES):
        raise ValueError(f"spinful readout needs {len(SPIN_COPIES)} copies on axis -2, got {x.shape}")
    real = assemble_blocks(x, shell_ls)
    if real.dtype not in (jnp.float32, jnp.float64):
        real = real.astype(jnp.float32)
    sub = real[..., 0::2, :, :] + 1j * real[..., 1::2, :, :]
    top = jnp.concatenate([sub[..., 0, :, :], sub[..., 1, :, :]], axis=-1)
    bottom = jnp.concatenate([sub[..., 2, :, :], sub[..., 3, :, :]], axis=-1)
    return jnp.concatenate([top, bottom], axis=-2)


def check_readout_reachable(net_irreps: e3nn.Irreps, shell_ls: Sequence[int], *, parity: bool) -> None:
    """Raise ConfigError when the readout cannot form every irrep that the basis's blocks need.

    The rule is :func:`hamflow.graph.irreps.check_net_irreps` (the one place it is written).
    """
    check_net_irreps(str(net_irreps), tuple(shell_ls), consider_parity=parity)


class BlockReadout(nn.Module):
    """Features -> orbital blocks of the common basis, through a self-interaction and the CG head.

    y = Linear([f, a (x) v]) with a (x) v a channel-wise tensor product (``tp_channels`` channels) of a
    linear projection a of the features with one v of their lowest non-scalar irreps (usually 1o); it
    supplies irreps the features lack (e.g. 1e from 1o x 1o, 2o from 2e x 1o).
    Returns (M, B, B) real, or (M, 2B, 2B) complex [[uu, ud], [du, dd]] when ``spinful``: with
    ``spin_orbit`` H0 (x) 1 + i T . sigma (:func:`assemble_spin_orbit_blocks`), else four independent
    orbital blocks (:func:`assemble_spinful_blocks`).
    """

    shell_ls: tuple[int, ...]
    parity: bool
    spinful: bool = False
    spin_orbit: bool = False
    tp_channels: int = 8

    @nn.compact
    def __call__(self, features: e3nn.IrrepsArray) -> jnp.ndarray:
        blocks = output_irreps(self.shell_ls, parity=self.parity)
        with_vector = self.spinful and self.spin_orbit
        target = (
            blocks + spin_vector_output_irreps(self.shell_ls, parity=self.parity) if with_vector else blocks
        )
        needed = e3nn.Irreps([(1, ir) for ir in sorted({ir for _, ir in target})])
        k = self.tp_channels
        parts = [features]
        vectors = readout_vector_irreps(features.irreps)
        if vectors:
            distinct = e3nn.Irreps([(k, ir) for ir in sorted({ir for _, ir in features.irreps})])
            left = e3nn.flax.Linear(distinct, force_irreps_out=True, name="left")(features).mul_to_axis(k)
            right_irreps = e3nn.Irreps([(k, ir) for ir in vectors])
            right = e3nn.flax.Linear(right_irreps, force_irreps_out=True, name="right")(features)
            parts.append(tensor_product_mul1(left, right.mul_to_axis(k), needed).axis_to_mul())
        mixed = regroup(e3nn.concatenate(parts))
        copies = len(SPIN_COPIES) if self.spinful and not with_vector else 1
        sorted_target, index = regroup_index(target)
        wide = e3nn.Irreps([(copies * mul, ir) for mul, ir in sorted_target])
        out = e3nn.flax.Linear(wide, force_irreps_out=True, name="out")(mixed)
        per_copy = [
            (jnp.zeros((*out.shape[:-1], mul, ir.dim), out.dtype) if chunk is None else chunk).reshape(
                *out.shape[:-1], copies, -1
            )
            for (mul, ir), chunk in zip(out.irreps, out.chunks, strict=True)
        ]
        stacked = permute_last(jnp.concatenate(per_copy, axis=-1), index)
        if with_vector:
            size = blocks.dim
            scalar = e3nn.IrrepsArray(blocks, stacked[..., 0, :size])
            vector = e3nn.IrrepsArray(
                spin_vector_output_irreps(self.shell_ls, parity=self.parity), stacked[..., 0, size:]
            )
            return assemble_spin_orbit_blocks(scalar, vector, self.shell_ls)
        if not self.spinful:
            return assemble_blocks(e3nn.IrrepsArray(blocks, stacked[..., 0, :]), self.shell_ls)
        return assemble_spinful_blocks(e3nn.IrrepsArray(blocks, stacked), self.shell_ls)
