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
from hamflow.nn.radial import EdgeChunk, EdgeGeometry, chunk_geometry, inverse_sqrt_degree, node_degree
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
    """One node update followed by one edge update (see the module docstring).

    Three steps, as in :class:`hamflow.nn.sparrow.SparrowBlock`: :meth:`messages` (per edge, summed
    by atom i), :meth:`update_nodes`, :meth:`update_edges`; ``__call__`` runs them on all edges.
    """

    irreps: str
    radial_hidden: int

    def setup(self) -> None:
        gate_irreps = str(gate_input_irreps(e3nn.Irreps(self.irreps)))
        self.node_norm = EquivariantLayerNorm()
        self.edge_norm = EquivariantLayerNorm()
        self.node_conv = SO2Convolution(gate_irreps, self.radial_hidden)
        self.node_self = e3nn.flax.Linear(gate_irreps, force_irreps_out=True)
        self.pair_norm = EquivariantLayerNorm()
        self.edge_conv = SO2Convolution(gate_irreps, self.radial_hidden)
        self.edge_self = e3nn.flax.Linear(gate_irreps, force_irreps_out=True)

    def _scalars(self, x: e3nn.IrrepsArray) -> jnp.ndarray:
        num_scalars = e3nn.Irreps(self.irreps).filter(keep=["0e"]).dim
        return x.filter(keep=["0e"]).array[..., :num_scalars]

    def messages(
        self,
        nodes: e3nn.IrrepsArray,
        edges: e3nn.IrrepsArray,
        wigners: list[jnp.ndarray],
        geometry: EdgeGeometry,
        src: jnp.ndarray,
        dst: jnp.ndarray,
    ) -> jnp.ndarray:
        """(N, gate irreps dim) messages of these C edges summed into their atom i = src."""
        node_in = self.node_norm(nodes)
        edge_in = self.edge_norm(edges)
        message_in = regroup(e3nn.concatenate([node_in[dst], edge_in]))
        scalars = self._scalars(node_in)
        messages = self.node_conv(message_in, wigners, geometry.radial, [scalars[src], scalars[dst]])
        messages = messages * geometry.message_weights[:, None]
        return jax.ops.segment_sum(messages.array, src, num_segments=nodes.shape[0])

    def update_nodes(
        self, nodes: e3nn.IrrepsArray, summed: jnp.ndarray, inv_sqrt_degree: jnp.ndarray
    ) -> e3nn.IrrepsArray:
        """Nodes after the update, from the messages ``summed`` over all edges (N, gate dim)."""
        irreps = e3nn.Irreps(self.irreps)
        aggregated = e3nn.IrrepsArray(gate_input_irreps(irreps), summed * inv_sqrt_degree[:, None])
        self_term = self.node_self(self.node_norm(nodes))
        return nodes + gate(aggregated + self_term, irreps)

    def update_edges(
        self,
        nodes: e3nn.IrrepsArray,
        edges: e3nn.IrrepsArray,
        wigners: list[jnp.ndarray],
        geometry: EdgeGeometry,
        src: jnp.ndarray,
        dst: jnp.ndarray,
        offsite: jnp.ndarray,
    ) -> e3nn.IrrepsArray:
        """The C edges after the update, from the updated atoms ``nodes`` (N, irreps)."""
        irreps = e3nn.Irreps(self.irreps)
        edge_in = self.edge_norm(edges)
        node_in = self.pair_norm(nodes)
        pair_in = regroup(e3nn.concatenate([node_in[src], node_in[dst], edge_in]))
        scalars = self._scalars(node_in)
        pair = self.edge_conv(pair_in, wigners, geometry.radial, [scalars[src], scalars[dst]])
        update = pair + self.edge_self(edge_in)
        return edges + gate(update, irreps) * offsite[:, None]

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
        summed = self.messages(nodes, edges, wigners, geometry, src, dst)
        nodes = self.update_nodes(nodes, summed, geometry.inv_sqrt_degree)
        return nodes, self.update_edges(nodes, edges, wigners, geometry, src, dst, offsite)


class Eagle(nn.Module):
    """The eagle backbone: GraphBatch -> (node features (N, irreps), edge features (E, irreps)).

    irreps: the regrouped, all-even ``net_irreps``; rmax: the radial cutoff in Angstrom; parity must
    be False (checked by build_model); dtype: compute dtype of the features. The steps of
    ``__call__`` are methods over an :class:`~hamflow.nn.radial.EdgeChunk`, as in
    :class:`hamflow.nn.sparrow.Sparrow`.
    """

    irreps: str
    num_blocks: int
    rmax: float
    parity: bool = False
    num_radial: int = 64
    radial_hidden: int = 64
    dtype: jnp.dtype = jnp.float32

    def setup(self) -> None:
        irreps = e3nn.Irreps(self.irreps)
        if self.parity or any(ir.p == -1 for _, ir in irreps):
            raise ValueError("eagle is SO(3)-equivariant only: parity must be False and irreps even")
        num_scalars = irreps.filter(keep=["0e"]).dim
        self.atom_embedding = nn.Embed(NUM_ELEMENTS, num_scalars, embedding_init=nn.initializers.normal(1.0))
        self.node_init = e3nn.flax.Linear(irreps, force_irreps_out=True)
        self.edge_radial = e3nn.flax.MultiLayerPerceptron((self.radial_hidden, num_scalars), act=jax.nn.silu)
        self.edge_init = e3nn.flax.Linear(irreps, force_irreps_out=True)
        for index in range(self.num_blocks):
            setattr(self, f"block_{index}", EagleBlock(str(irreps), self.radial_hidden))
        self.node_out_norm = EquivariantLayerNorm()
        self.edge_out_norm = EquivariantLayerNorm()

    def _geometry(self, chunk: EdgeChunk, inv_sqrt_degree: jnp.ndarray) -> EdgeGeometry:
        return chunk_geometry(
            chunk, inv_sqrt_degree, rmax=self.rmax, num_basis=self.num_radial, dtype=self.dtype
        )

    def _edge_terms(self, chunk: EdgeChunk) -> tuple[EdgeGeometry, list[jnp.ndarray], jnp.ndarray]:
        geometry = self._geometry(chunk, jnp.ones((1,), self.dtype))
        wigners = edge_frame_wigners(geometry.directions, e3nn.Irreps(self.irreps).lmax)
        offsite = jnp.logical_not(jnp.asarray(chunk.edge_onsite)).astype(self.dtype)
        return geometry, wigners, offsite

    def degree(self, chunk: EdgeChunk, num_nodes: int) -> jnp.ndarray:
        """(num_nodes,) this chunk's part of the nodes' degree (hamflow.nn.radial.node_degree)."""
        return node_degree(chunk, num_nodes, rmax=self.rmax, dtype=self.dtype)

    def initial_nodes(self, atomic_numbers: jnp.ndarray) -> e3nn.IrrepsArray:
        """(N, irreps) node features before the first block."""
        embedding = self.atom_embedding(jnp.asarray(atomic_numbers))
        return self.node_init(e3nn.IrrepsArray(f"{embedding.shape[-1]}x0e", embedding.astype(self.dtype)))

    def initial_edges(self, chunk: EdgeChunk) -> e3nn.IrrepsArray:
        """(C, irreps) features of the chunk's edges before the first block."""
        geometry = self._geometry(chunk, jnp.ones((1,), self.dtype))
        sh = e3nn.spherical_harmonics(
            e3nn.Irreps.spherical_harmonics(e3nn.Irreps(self.irreps).lmax, p=1),
            e3nn.IrrepsArray("1e", geometry.directions),
            normalize=False,
            normalization="component",
        )
        radial_scalars = self.edge_radial(geometry.radial)
        num_scalars = radial_scalars.shape[-1]
        edge_in = regroup(e3nn.concatenate([e3nn.IrrepsArray(f"{num_scalars}x0e", radial_scalars), sh]))
        return self.edge_init(edge_in)

    def block_messages(
        self, index: int, nodes: e3nn.IrrepsArray, edges: e3nn.IrrepsArray, chunk: EdgeChunk
    ) -> jnp.ndarray:
        """Block ``index``: (N, gate dim) messages of the chunk's edges summed by atom i."""
        geometry, wigners, _ = self._edge_terms(chunk)
        block = getattr(self, f"block_{index}")
        return block.messages(
            nodes, edges, wigners, geometry, jnp.asarray(chunk.edge_src), jnp.asarray(chunk.edge_dst)
        )

    def block_nodes(
        self, index: int, nodes: e3nn.IrrepsArray, summed: jnp.ndarray, inv_sqrt_degree: jnp.ndarray
    ) -> e3nn.IrrepsArray:
        """Block ``index``: updated nodes from the messages summed over all edges."""
        return getattr(self, f"block_{index}").update_nodes(nodes, summed, inv_sqrt_degree)

    def block_edges(
        self, index: int, nodes: e3nn.IrrepsArray, edges: e3nn.IrrepsArray, chunk: EdgeChunk
    ) -> e3nn.IrrepsArray:
        """Block ``index``: the chunk's edges updated from the updated ``nodes``."""
        geometry, wigners, offsite = self._edge_terms(chunk)
        block = getattr(self, f"block_{index}")
        return block.update_edges(
            nodes, edges, wigners, geometry, jnp.asarray(chunk.edge_src), jnp.asarray(chunk.edge_dst), offsite
        )

    def final_nodes(self, nodes: e3nn.IrrepsArray) -> e3nn.IrrepsArray:
        return self.node_out_norm(nodes)

    def final_edges(self, edges: e3nn.IrrepsArray) -> e3nn.IrrepsArray:
        return self.edge_out_norm(edges)

    def __call__(self, batch: GraphBatch) -> tuple[e3nn.IrrepsArray, e3nn.IrrepsArray]:
        chunk = EdgeChunk.of(batch)
        num_nodes = batch.atomic_numbers.shape[0]
        geometry, wigners, offsite = self._edge_terms(chunk)
        geometry = geometry._replace(inv_sqrt_degree=inverse_sqrt_degree(self.degree(chunk, num_nodes)))
        src, dst = jnp.asarray(batch.edge_src), jnp.asarray(batch.edge_dst)
        nodes = self.initial_nodes(batch.atomic_numbers)
        edges = self.initial_edges(chunk)
        for index in range(self.num_blocks):
            nodes, edges = getattr(self, f"block_{index}")(nodes, edges, wigners, geometry, src, dst, offsite)
        return self.final_nodes(nodes), self.final_edges(edges)
