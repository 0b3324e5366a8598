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
from hamflow.nn.radial import EdgeGeometry, edge_geometry

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
    """One node update followed by one edge update (see the module docstring)."""

    irreps: str
    radial_hidden: int
    message_divisor: int = 2

    @nn.compact
    def __call__(
        self,
        nodes: e3nn.IrrepsArray,
        edges: e3nn.IrrepsArray,
        sh: e3nn.IrrepsArray,
        geometry: EdgeGeometry,
        src: jnp.ndarray,
        dst: jnp.ndarray,
    ) -> tuple[e3nn.IrrepsArray, e3nn.IrrepsArray]:
        irreps = e3nn.Irreps(self.irreps)
        gate_irreps = gate_input_irreps(irreps)
        num_scalars = irreps.filter(keep=["0e"]).dim
        narrow = e3nn.Irreps([(max(1, mul // self.message_divisor), ir) for mul, ir in irreps])

        def scalars_of(x: e3nn.IrrepsArray) -> jnp.ndarray:
            return x.filter(keep=["0e"]).array[..., :num_scalars]

        # Node update (pre-normalised inputs, residual): messages from j = dst into i = src.
        node_in = EquivariantLayerNorm(name="node_norm")(nodes)
        edge_in = EquivariantLayerNorm(name="edge_norm")(edges)
        message_in = regroup(
            e3nn.concatenate(
                [
                    e3nn.flax.Linear(narrow, name="message_node")(node_in)[dst],
                    e3nn.flax.Linear(narrow, name="message_edge")(edge_in),
                ]
            )
        )
        messages = EquivariantConvolution(str(gate_irreps), self.radial_hidden, name="node_conv")(
            message_in, sh, geometry.radial, [scalars_of(node_in)[src], scalars_of(node_in)[dst]]
        )
        messages = messages * geometry.message_weights[:, None]
        summed = jax.ops.segment_sum(messages.array, src, num_segments=nodes.shape[0])
        aggregated = e3nn.IrrepsArray(gate_irreps, summed * geometry.inv_sqrt_degree[:, None])
        update = aggregated + e3nn.flax.Linear(gate_irreps, force_irreps_out=True, name="node_self")(node_in)
        nodes = nodes + gate(update, irreps)

        # Edge update from the updated atoms of the pair.
        node_in = EquivariantLayerNorm(name="pair_norm")(nodes)
        pair_in = regroup(
            e3nn.concatenate(
                [
                    e3nn.flax.Linear(narrow, name="pair_src")(node_in)[src],
                    e3nn.flax.Linear(narrow, name="pair_dst")(node_in)[dst],
                    e3nn.flax.Linear(narrow, name="pair_edge")(edge_in),
                ]
            )
        )
        pair = EquivariantConvolution(str(gate_irreps), self.radial_hidden, name="edge_conv")(
            pair_in, sh, geometry.radial, [scalars_of(node_in)[src], scalars_of(node_in)[dst]]
        )
        update = pair + e3nn.flax.Linear(gate_irreps, force_irreps_out=True, name="edge_self")(edge_in)
        edges = edges + gate(update, irreps)
        return nodes, edges


class Sparrow(nn.Module):
    """The sparrow backbone: GraphBatch -> (node features (N, irreps), edge features (E, irreps)).

    irreps: the regrouped ``net_irreps``; parity: odd-l harmonics odd under inversion (else SO(3) only);
    rmax: the radial cutoff in Angstrom; dtype: compute dtype of the features.
    """

    irreps: str
    num_blocks: int
    rmax: float
    parity: bool
    num_radial: int = 64
    radial_hidden: int = 64
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, batch: GraphBatch) -> tuple[e3nn.IrrepsArray, e3nn.IrrepsArray]:
        irreps = e3nn.Irreps(self.irreps)
        geometry = edge_geometry(batch, rmax=self.rmax, num_basis=self.num_radial, dtype=self.dtype)
        src = jnp.asarray(batch.edge_src)
        dst = jnp.asarray(batch.edge_dst)
        lmax = irreps.lmax
        vector_irrep = "1o" if self.parity else "1e"
        sh = e3nn.spherical_harmonics(
            e3nn.Irreps.spherical_harmonics(lmax, p=-1 if self.parity else 1),
            e3nn.IrrepsArray(vector_irrep, geometry.directions),
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
            nodes, edges = SparrowBlock(str(irreps), self.radial_hidden, name=f"block_{index}")(
                nodes, edges, sh, geometry, src, dst
            )
        return EquivariantLayerNorm(name="node_out_norm")(nodes), EquivariantLayerNorm(name="edge_out_norm")(
            edges
        )
