"""sparrow (net_type "normal"): a DeepH-E3-like message-passing network with node and edge features.

Each of ``num_blocks`` blocks updates (n = EquivariantLayerNorm of the block's input)
  nodes: x_i <- x_i + Gate( sum_j w_ij Lin(rho_ij * [(Lin n(x_j) (+) Lin n(e_ij)) (x) Y(r_ij)]) + Lin n(x_i) )
  edges: e_ij <- e_ij + Gate( Lin(rho'_ij * [(Lin n(x_i) (+) Lin n(x_j) (+) Lin n(e_ij)) (x) Y(r_ij)])
                              + Lin n(e_ij) )
with Y the spherical harmonics of the edge direction (odd l odd under inversion when parity is
considered, else all even), (x) the channel-wise tensor product (one path per input channel, harmonic
and output irrep the gate needs; hamflow.nn.layers.tensor_product_mul1), rho radial weights per
channel and path from an MLP of the Gaussian basis and both atoms' scalars, w_ij the smooth cutoff
envelope over 1/sqrt(1 + degree) (on-site edges send no message), Lin e3nn linear maps (the inputs
narrowed to half the multiplicities before the product) and Gate the gated nonlinearity.
Features carry ``net_irreps``; the outputs are layer-normalised for the readout.
"""

from __future__ import annotations

import e3nn_jax as e3nn
import flax.linen as nn
import jax
import jax.numpy as jnp

from hamflow.graph.batch import GraphBatch
from hamflow.nn.layers import (
    EquivariantLayerNorm,
    gate,
    gate_input_irreps,
    product_layout,
    regroup,
    tensor_product_mul1,
)
from hamflow.nn.radial import EdgeChunk, EdgeGeometry, chunk_geometry, inverse_sqrt_degree, node_degree

NUM_ELEMENTS = 119  # atomic numbers 0 (padding) .. 118: fine-tuning on new elements needs no new table


def radial_weights(radial: jnp.ndarray, scalars: list[jnp.ndarray], count: int, hidden: int) -> jnp.ndarray:
    """Invariant per-channel edge weights (E, count) from the radial basis and the atoms' scalars."""
    inputs = jnp.concatenate([radial, *scalars], axis=-1)
    return e3nn.flax.MultiLayerPerceptron((hidden, hidden, count), act=jax.nn.silu, output_activation=False)(
        inputs
    )


class EquivariantConvolution(nn.Module):
    """Linear(rho(radial, scalars) * [inputs (x) Y]): the radially weighted tensor product on edges.

    Every output channel of the product (input channel c, path p = (l_in, l_Y, l_out)) is scaled by
    u_c * v_p, both from one MLP of the radial basis and the atoms' scalars: DeepH-E3's per-path 'uvu'
    weights in factorised form (C + P weights per edge instead of C x P).
    inputs: (E, irreps) features in the standard-harmonic basis; sh: (E, Y irreps); returns (E, irreps_out).
    """

    irreps_out: str
    radial_hidden: int

    @nn.compact
    def __call__(
        self, inputs: e3nn.IrrepsArray, sh: e3nn.IrrepsArray, radial: jnp.ndarray, scalars: list[jnp.ndarray]
    ) -> e3nn.IrrepsArray:
        irreps_out = e3nn.Irreps(self.irreps_out)
        num_paths = len(product_layout(inputs.irreps, sh.irreps, irreps_out).path_types)
        num_channels = inputs.irreps.num_irreps
        weights = radial_weights(radial, scalars, num_channels + num_paths, self.radial_hidden)
        products = tensor_product_mul1(
            inputs,
            sh,
            irreps_out,
            channel_weights=weights[..., :num_channels],
            path_weights=weights[..., num_channels:],
        )
        return e3nn.flax.Linear(irreps_out, force_irreps_out=True)(products)


class SparrowBlock(nn.Module):
    """One node update followed by one edge update (see the module docstring).

    The update is three steps, so that the edges can be fed in chunks (hamflow.infer.chunked):
    :meth:`messages` (per edge, summed by atom i), :meth:`update_nodes` (per node) and
    :meth:`update_edges` (per edge); ``__call__`` runs them on all edges at once.
    """

    irreps: str
    radial_hidden: int
    message_divisor: int = 2

    def setup(self) -> None:
        irreps = e3nn.Irreps(self.irreps)
        gate_irreps = str(gate_input_irreps(irreps))
        narrow = e3nn.Irreps([(max(1, mul // self.message_divisor), ir) for mul, ir in irreps])
        self.node_norm = EquivariantLayerNorm()
        self.edge_norm = EquivariantLayerNorm()
        self.message_node = e3nn.flax.Linear(narrow)
        self.message_edge = e3nn.flax.Linear(narrow)
        self.node_conv = EquivariantConvolution(gate_irreps, self.radial_hidden)
        self.node_self = e3nn.flax.Linear(gate_irreps, force_irreps_out=True)
        self.pair_norm = EquivariantLayerNorm()
        self.pair_src = e3nn.flax.Linear(narrow)
        self.pair_dst = e3nn.flax.Linear(narrow)
        self.pair_edge = e3nn.flax.Linear(narrow)
        self.edge_conv = EquivariantConvolution(gate_irreps, self.radial_hidden)
        self.edge_self = e3nn.flax.Linear(gate_irreps, force_irreps_out=True)

    def _scalars(self, x: e3nn.IrrepsArray) -> jnp.ndarray:
        num_scalars = e3nn.Irreps(self.irreps).filter(keep=["0e"]).dim
        return x.filter(keep=["0e"]).array[..., :num_scalars]

    def messages(
        self,
        nodes: e3nn.IrrepsArray,
        edges: e3nn.IrrepsArray,
        sh: e3nn.IrrepsArray,
        geometry: EdgeGeometry,
        src: jnp.ndarray,
        dst: jnp.ndarray,
    ) -> jnp.ndarray:
        """(N, gate irreps dim) messages of these edges (C of them) summed into their atom i = src.

        nodes (N, irreps) all atoms; edges, sh, geometry, src, dst: the C edges."""
        node_in = self.node_norm(nodes)
        edge_in = self.edge_norm(edges)
        message_in = regroup(e3nn.concatenate([self.message_node(node_in)[dst], self.message_edge(edge_in)]))
        scalars = self._scalars(node_in)
        messages = self.node_conv(message_in, sh, geometry.radial, [scalars[src], scalars[dst]])
        messages = messages * geometry.message_weights[:, None]
        return jax.ops.segment_sum(messages.array, src, num_segments=nodes.shape[0])

    def update_nodes(
        self, nodes: e3nn.IrrepsArray, summed: jnp.ndarray, inv_sqrt_degree: jnp.ndarray
    ) -> e3nn.IrrepsArray:
        """Nodes after the update, from the messages ``summed`` over all edges (N, gate dim)."""
        irreps = e3nn.Irreps(self.irreps)
        gate_irreps = gate_input_irreps(irreps)
        aggregated = e3nn.IrrepsArray(gate_irreps, summed * inv_sqrt_degree[:, None])
        update = aggregated + self.node_self(self.node_norm(nodes))
        return nodes + gate(update, irreps)

    def update_edges(
        self,
        nodes: e3nn.IrrepsArray,
        edges: e3nn.IrrepsArray,
        sh: e3nn.IrrepsArray,
        geometry: EdgeGeometry,
        src: jnp.ndarray,
        dst: jnp.ndarray,
    ) -> e3nn.IrrepsArray:
        """The C edges after the update, from the updated atoms ``nodes`` (N, irreps)."""
        irreps = e3nn.Irreps(self.irreps)
        edge_in = self.edge_norm(edges)
        node_in = self.pair_norm(nodes)
        pair_in = regroup(
            e3nn.concatenate(
                [self.pair_src(node_in)[src], self.pair_dst(node_in)[dst], self.pair_edge(edge_in)]
            )
        )
        scalars = self._scalars(node_in)
        pair = self.edge_conv(pair_in, sh, geometry.radial, [scalars[src], scalars[dst]])
        update = pair + self.edge_self(edge_in)
        return edges + gate(update, irreps)

    def __call__(
        self,
        nodes: e3nn.IrrepsArray,
        edges: e3nn.IrrepsArray,
        sh: e3nn.IrrepsArray,
        geometry: EdgeGeometry,
        src: jnp.ndarray,
        dst: jnp.ndarray,
    ) -> tuple[e3nn.IrrepsArray, e3nn.IrrepsArray]:
        summed = self.messages(nodes, edges, sh, geometry, src, dst)
        nodes = self.update_nodes(nodes, summed, geometry.inv_sqrt_degree)
        return nodes, self.update_edges(nodes, edges, sh, geometry, src, dst)


class Sparrow(nn.Module):
    """The sparrow backbone: GraphBatch -> (node features (N, irreps), edge features (E, irreps)).

    irreps: the regrouped ``net_irreps``; parity: odd-l harmonics odd under inversion (else SO(3) only);
    rmax: the radial cutoff in Angstrom; dtype: compute dtype of the features.
    The steps of ``__call__`` are methods over an :class:`~hamflow.nn.radial.EdgeChunk` (any slice of
    the edges), so that a caller can feed the edges of a large structure in chunks
    (hamflow.infer.chunked); ``__call__`` is those steps on all edges at once.
    """

    irreps: str
    num_blocks: int
    rmax: float
    parity: bool
    num_radial: int = 64
    radial_hidden: int = 64
    dtype: jnp.dtype = jnp.float32

    def setup(self) -> None:
        irreps = e3nn.Irreps(self.irreps)
        num_scalars = irreps.filter(keep=["0e"]).dim
        self.atom_embedding = nn.Embed(NUM_ELEMENTS, num_scalars, embedding_init=nn.initializers.normal(1.0))
        self.node_init = e3nn.flax.Linear(irreps, force_irreps_out=True)
        self.edge_radial = e3nn.flax.MultiLayerPerceptron((self.radial_hidden, num_scalars), act=jax.nn.silu)
        self.edge_init = e3nn.flax.Linear(irreps, force_irreps_out=True)
        for index in range(self.num_blocks):
            setattr(self, f"block_{index}", SparrowBlock(str(irreps), self.radial_hidden))
        self.node_out_norm = EquivariantLayerNorm()
        self.edge_out_norm = EquivariantLayerNorm()

    def _geometry(
        self, chunk: EdgeChunk, inv_sqrt_degree: jnp.ndarray
    ) -> tuple[EdgeGeometry, e3nn.IrrepsArray]:
        geometry = chunk_geometry(
            chunk, inv_sqrt_degree, rmax=self.rmax, num_basis=self.num_radial, dtype=self.dtype
        )
        lmax = e3nn.Irreps(self.irreps).lmax
        sh = e3nn.spherical_harmonics(
            e3nn.Irreps.spherical_harmonics(lmax, p=-1 if self.parity else 1),
            e3nn.IrrepsArray("1o" if self.parity else "1e", geometry.directions),
            normalize=False,
            normalization="component",
        )
        return geometry, sh

    def degree(self, chunk: EdgeChunk, num_nodes: int) -> jnp.ndarray:
        """(num_nodes,) this chunk's part of the nodes' degree (hamflow.nn.radial.node_degree)."""
        return node_degree(chunk, num_nodes, rmax=self.rmax, dtype=self.dtype)

    def initial_nodes(self, atomic_numbers: jnp.ndarray) -> e3nn.IrrepsArray:
        """(N, irreps) node features before the first block."""
        embedding = self.atom_embedding(jnp.asarray(atomic_numbers))
        return self.node_init(e3nn.IrrepsArray(f"{embedding.shape[-1]}x0e", embedding.astype(self.dtype)))

    def initial_edges(self, chunk: EdgeChunk) -> e3nn.IrrepsArray:
        """(C, irreps) features of the chunk's edges before the first block."""
        geometry, sh = self._geometry(chunk, jnp.ones((1,), self.dtype))
        radial_scalars = self.edge_radial(geometry.radial)
        num_scalars = radial_scalars.shape[-1]
        edge_in = regroup(e3nn.concatenate([e3nn.IrrepsArray(f"{num_scalars}x0e", radial_scalars), sh]))
        return self.edge_init(edge_in)

    def block_messages(
        self, index: int, nodes: e3nn.IrrepsArray, edges: e3nn.IrrepsArray, chunk: EdgeChunk
    ) -> jnp.ndarray:
        """Block ``index``: (N, gate dim) messages of the chunk's edges summed by atom i."""
        geometry, sh = self._geometry(chunk, jnp.ones((1,), self.dtype))
        block = getattr(self, f"block_{index}")
        return block.messages(
            nodes, edges, sh, geometry, jnp.asarray(chunk.edge_src), jnp.asarray(chunk.edge_dst)
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
        geometry, sh = self._geometry(chunk, jnp.ones((1,), self.dtype))
        block = getattr(self, f"block_{index}")
        return block.update_edges(
            nodes, edges, sh, geometry, jnp.asarray(chunk.edge_src), jnp.asarray(chunk.edge_dst)
        )

    def final_nodes(self, nodes: e3nn.IrrepsArray) -> e3nn.IrrepsArray:
        return self.node_out_norm(nodes)

    def final_edges(self, edges: e3nn.IrrepsArray) -> e3nn.IrrepsArray:
        return self.edge_out_norm(edges)

    def __call__(self, batch: GraphBatch) -> tuple[e3nn.IrrepsArray, e3nn.IrrepsArray]:
        chunk = EdgeChunk.of(batch)
        num_nodes = batch.atomic_numbers.shape[0]
        inv_sqrt_degree = inverse_sqrt_degree(self.degree(chunk, num_nodes))
        geometry, sh = self._geometry(chunk, inv_sqrt_degree)
        src, dst = jnp.asarray(batch.edge_src), jnp.asarray(batch.edge_dst)
        nodes = self.initial_nodes(batch.atomic_numbers)
        edges = self.initial_edges(chunk)
        for index in range(self.num_blocks):
            nodes, edges = getattr(self, f"block_{index}")(nodes, edges, sh, geometry, src, dst)
        return self.final_nodes(nodes), self.final_edges(edges)
