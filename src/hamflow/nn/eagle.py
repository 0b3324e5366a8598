"""eagle (net_type "accurate"): the larger network, even-parity irreps, SO(2)-reduced convolutions.

The convolutions follow eSCN (Passaro & Zitnick 2023, "Reducing SO(3) convolutions to SO(2)"): the
features of an edge are rotated with Wigner D into the edge frame (edge direction on e3nn's polar axis
y), where any map that commutes with rotations about that axis is allowed: for every |m| a dense
matrix mixing all channels and all l >= |m| (complex-multiplication form on the (m, -m) pairs), then
rotated back. This costs O(L^3) per channel instead of the O(L^6) of a full tensor product with the
spherical harmonics, and is exactly SO(3)-equivariant (only SO(3): consider_parity = false).

Each of ``num_blocks`` blocks updates
  nodes:  x_i <- x_i + Gate( sum_j w_ij D_ij SO2(Gate(SO2( D_ij^T (x_j (+) e_ij) * rho_ij ))) + Lin(x_i) )
  edges:  e_ij <- e_ij + Gate( D_ij SO2(Gate(SO2( D_ij^T (x_i (+) x_j (+) e_ij) * rho'_ij ))) + Lin(e_ij) )
with rho per-(channel, l) radial weights from an MLP of the Gaussian basis and the atoms' scalars and
w_ij the cutoff envelope over 1/sqrt(1 + degree). On-site edges have no frame: they send no message and
their edge features are not updated (their blocks come from the node features).
"""

from __future__ import annotations

import functools

import e3nn_jax as e3nn
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hamflow.graph.batch import GraphBatch
from hamflow.nn.layers import EquivariantLayerNorm, gate, gate_input_irreps, permute_last, regroup
from hamflow.nn.radial import EdgeGeometry, edge_geometry
from hamflow.nn.sparrow import NUM_ELEMENTS, radial_weights


def edge_frame_wigners(directions: jnp.ndarray, lmax: int) -> list[jnp.ndarray]:
    """D_l(alpha, beta, 0) for l = 0..lmax, each (E, 2l+1, 2l+1): e3nn rotations taking y to each edge.

    directions: (E, 3) unit vectors in e3nn axes; zero vectors (on-site, padding) give the identity.
    """
    x, y, z = directions[..., 0], directions[..., 1], directions[..., 2]
    rho_squared = x**2 + z**2
    has_rho = rho_squared > 0.0
    rho = jnp.where(has_rho, jnp.sqrt(jnp.where(has_rho, rho_squared, 1.0)), 0.0)
    is_zero = jnp.logical_and(jnp.logical_not(has_rho), y == 0.0)
    alpha = jnp.where(has_rho, jnp.arctan2(jnp.where(has_rho, x, 0.0), jnp.where(has_rho, z, 1.0)), 0.0)
    beta = jnp.where(is_zero, 0.0, jnp.arctan2(rho, jnp.where(is_zero, 1.0, y)))
    return [e3nn.Irrep(l, 1).D_from_angles(alpha, beta, jnp.zeros_like(alpha)) for l in range(lmax + 1)]


def rotate(x: e3nn.IrrepsArray, wigners: list[jnp.ndarray], *, inverse: bool) -> e3nn.IrrepsArray:
    """Apply D_l (or D_l^T when ``inverse``) per edge to every irrep chunk of x (E, irreps)."""
    pattern = "eji,emj->emi" if inverse else "eij,emj->emi"
    chunks = []
    for (_, ir), chunk in zip(x.irreps, x.chunks, strict=True):
        if chunk is None or ir.l == 0:
            chunks.append(chunk)
        else:
            chunks.append(jnp.einsum(pattern, wigners[ir.l].astype(chunk.dtype), chunk))
    return e3nn.from_chunks(x.irreps, chunks, x.shape[:-1], x.dtype)


@functools.cache
def _m_indices(irreps: e3nn.Irreps) -> list[tuple[np.ndarray, np.ndarray]]:
    """For m = 0..lmax: flat indices of components (channel, l >= m) at +m and at -m (both m for m = 0).

    int32, since the result is cached (see hamflow.nn.block_head._assembly_plan).
    """
    per_m: list[tuple[list[int], list[int]]] = [([], []) for _ in range(irreps.lmax + 1)]
    offset = 0
    for mul, ir in irreps:
        for channel in range(mul):
            base = offset + channel * ir.dim + ir.l
            for m in range(ir.l + 1):
                per_m[m][0].append(base + m)
                per_m[m][1].append(base - m)
        offset += mul * ir.dim
    return [(np.array(plus, dtype=np.int32), np.array(minus, dtype=np.int32)) for plus, minus in per_m]


class SO2Linear(nn.Module):
    """Linear map in the edge frame that commutes with rotations about the polar axis.

    For m = 0 a dense matrix over all (channel, l) components with m = 0 (plus biases on 0e outputs);
    for m > 0 matrices A_m, B_m acting as (A + iB)(x_m + i x_-m). Input (E, irreps_in), output
    (E, irreps_out); output components with |m| above the input's lmax are zero. Weights are N(0, 1)
    with the fan-in normalisation applied in the forward pass (e3nn's "path" gradient normalisation).
    """

    irreps_out: str

    @nn.compact
    def __call__(self, x: e3nn.IrrepsArray) -> e3nn.IrrepsArray:
        irreps_out = e3nn.Irreps(self.irreps_out)
        in_idx = _m_indices(x.irreps)
        out_idx = _m_indices(irreps_out)
        # x in m-major order: [m = 0 | +1 | -1 | +2 | -2 | ...] (a permutation, see permute_last)
        by_m = permute_last(x.array, np.concatenate([in_idx[0][0]] + [i for p in in_idx[1:] for i in p]))
        sizes = [len(in_idx[0][0])] + [n for plus, _ in in_idx[1:] for n in (len(plus), len(plus))]
        parts = jnp.split(by_m, np.cumsum(sizes)[:-1], axis=-1)
        pieces, positions = [], []
        for m in range(irreps_out.lmax + 1):
            out_plus, out_minus = out_idx[m]
            n_out = len(out_plus)
            if m > x.irreps.lmax:  # no input component with this |m|: zero output
                count = n_out if m == 0 else 2 * n_out
                pieces.append(jnp.zeros((*x.shape[:-1], count), x.dtype))
                positions += [out_plus] if m == 0 else [out_plus, out_minus]
                continue
            if m == 0:
                plus = parts[0]
                n_in = plus.shape[-1]
                weight = self.param("w0", nn.initializers.normal(1.0), (n_in, n_out), jnp.float32)
                pieces.append((plus @ weight.astype(x.dtype)) * n_in**-0.5)
                positions.append(out_plus)
                continue
            plus, minus = parts[2 * m - 1], parts[2 * m]
            n_in = plus.shape[-1]
            a = self.param(f"a{m}", nn.initializers.normal(1.0), (n_in, n_out), jnp.float32).astype(x.dtype)
            b = self.param(f"b{m}", nn.initializers.normal(1.0), (n_in, n_out), jnp.float32).astype(x.dtype)
            scale = (2 * n_in) ** -0.5
            pieces += [(plus @ a - minus @ b) * scale, (plus @ b + minus @ a) * scale]
            positions += [out_plus, out_minus]
        out = permute_last(jnp.concatenate(pieces, axis=-1), np.argsort(np.concatenate(positions)))
        num_scalars = irreps_out.filter(keep=["0e"]).dim
        if num_scalars:
            if irreps_out[: len(irreps_out.filter(keep=["0e"]))].filter(drop=["0e"]).dim:
                raise ValueError(f"SO2Linear needs the even scalars first in irreps_out, got {irreps_out}")
            bias = self.param("bias", nn.initializers.zeros, (num_scalars,), jnp.float32).astype(out.dtype)
            out = jnp.concatenate([out[..., :num_scalars] + bias, out[..., num_scalars:]], axis=-1)
        return e3nn.IrrepsArray(irreps_out, out)


class SO2Convolution(nn.Module):
    """Edge-frame message function: rotate in, radial weights, SO2Linear, gate, SO2Linear, rotate out."""

    irreps_out: str
    radial_hidden: int

    @nn.compact
    def __call__(
        self,
        inputs: e3nn.IrrepsArray,
        wigners: list[jnp.ndarray],
        radial: jnp.ndarray,
        scalars: list[jnp.ndarray],
    ) -> e3nn.IrrepsArray:
        irreps_out = e3nn.Irreps(self.irreps_out)
        local = rotate(inputs, wigners, inverse=True)
        local = local * radial_weights(radial, scalars, local.irreps.num_irreps, self.radial_hidden)
        hidden = gate(SO2Linear(str(gate_input_irreps(irreps_out)), name="so2_in")(local), irreps_out)
        local = SO2Linear(str(irreps_out), name="so2_out")(hidden)
        return rotate(local, wigners, inverse=False)


class EagleBlock(nn.Module):
    """One node update followed by one edge update (see the module docstring)."""

    irreps: str
    radial_hidden: int

    @nn.compact
    def __call__(
        self,
        nodes: e3nn.IrrepsArray,
        edges: e3nn.IrrepsArray,
        wigners: list[jnp.ndarray],
        geometry: EdgeGeometry,
        src: jnp.ndarray,
        dst: jnp.ndarray,
        offsite: jnp.ndarray,
    ) -> tuple[e3nn.IrrepsArray, e3nn.IrrepsArray]:
        irreps = e3nn.Irreps(self.irreps)
        gate_irreps = gate_input_irreps(irreps)
        num_scalars = irreps.filter(keep=["0e"]).dim

        def scalars_of(x: e3nn.IrrepsArray) -> jnp.ndarray:
            return x.filter(keep=["0e"]).array[..., :num_scalars]

        node_in = EquivariantLayerNorm(name="node_norm")(nodes)
        edge_in = EquivariantLayerNorm(name="edge_norm")(edges)
        message_in = regroup(e3nn.concatenate([node_in[dst], edge_in]))
        messages = SO2Convolution(str(gate_irreps), self.radial_hidden, name="node_conv")(
            message_in, wigners, geometry.radial, [scalars_of(node_in)[src], scalars_of(node_in)[dst]]
        )
        messages = messages * geometry.message_weights[:, None]
        summed = jax.ops.segment_sum(messages.array, src, num_segments=nodes.shape[0])
        aggregated = e3nn.IrrepsArray(messages.irreps, summed * geometry.inv_sqrt_degree[:, None])
        self_term = e3nn.flax.Linear(messages.irreps, force_irreps_out=True, name="node_self")(node_in)
        nodes = nodes + gate(aggregated + self_term, irreps)

        node_in = EquivariantLayerNorm(name="pair_norm")(nodes)
        pair_in = regroup(e3nn.concatenate([node_in[src], node_in[dst], edge_in]))
        pair = SO2Convolution(str(gate_irreps), self.radial_hidden, name="edge_conv")(
            pair_in, wigners, geometry.radial, [scalars_of(node_in)[src], scalars_of(node_in)[dst]]
        )
        update = pair + e3nn.flax.Linear(pair.irreps, force_irreps_out=True, name="edge_self")(edge_in)
        edges = edges + gate(update, irreps) * offsite[:, None]
        return nodes, edges


class Eagle(nn.Module):
    """The eagle backbone: GraphBatch -> (node features (N, irreps), edge features (E, irreps)).

    irreps: the regrouped, all-even ``net_irreps``; rmax: the radial cutoff in Angstrom; parity must
    be False (checked by build_model); dtype: compute dtype of the features.
    """

    irreps: str
    num_blocks: int
    rmax: float
    parity: bool = False
    num_radial: int = 64
    radial_hidden: int = 64
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, batch: GraphBatch) -> tuple[e3nn.IrrepsArray, e3nn.IrrepsArray]:
        irreps = e3nn.Irreps(self.irreps)
        if self.parity or any(ir.p == -1 for _, ir in irreps):
            raise ValueError("eagle is SO(3)-equivariant only: parity must be False and irreps even")
        geometry = edge_geometry(batch, rmax=self.rmax, num_basis=self.num_radial, dtype=self.dtype)
        src = jnp.asarray(batch.edge_src)
        dst = jnp.asarray(batch.edge_dst)
        offsite = jnp.logical_not(jnp.asarray(batch.edge_onsite)).astype(self.dtype)
        lmax = irreps.lmax
        wigners = edge_frame_wigners(geometry.directions, lmax)
        sh = e3nn.spherical_harmonics(
            e3nn.Irreps.spherical_harmonics(lmax, p=1),
            e3nn.IrrepsArray("1e", geometry.directions),
            normalize=False,
            normalization="component",
        )

        num_scalars = irreps.filter(keep=["0e"]).dim
        embedding = nn.Embed(
            NUM_ELEMENTS, num_scalars, embedding_init=nn.initializers.normal(1.0), name="atom_embedding"
        )(jnp.asarray(batch.atomic_numbers))
        nodes = e3nn.flax.Linear(irreps, force_irreps_out=True, name="node_init")(
            e3nn.IrrepsArray(f"{num_scalars}x0e", embedding.astype(self.dtype))
        )
        radial_scalars = e3nn.flax.MultiLayerPerceptron(
            (self.radial_hidden, num_scalars), act=jax.nn.silu, name="edge_radial"
        )(geometry.radial)
        edge_in = regroup(e3nn.concatenate([e3nn.IrrepsArray(f"{num_scalars}x0e", radial_scalars), sh]))
        edges = e3nn.flax.Linear(irreps, force_irreps_out=True, name="edge_init")(edge_in)

        for index in range(self.num_blocks):
            nodes, edges = EagleBlock(str(irreps), self.radial_hidden, name=f"block_{index}")(
                nodes, edges, wigners, geometry, src, dst, offsite
            )
        return EquivariantLayerNorm(name="node_out_norm")(nodes), EquivariantLayerNorm(name="edge_out_norm")(
            edges
        )
