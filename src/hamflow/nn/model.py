"""build_model: the Hamiltonian network for a net_type, its CG block readout, and parameter counting.

The module maps a GraphBatch to one orbital block per edge e = (R, i, j) in the common basis:
(E, B, B) real, or (E, 2B, 2B) complex [[uu, ud], [du, dd]] for spinful data. On-site edges read their
block from the node features of atom i, off-site edges from their edge features, through two readouts
of the same kind (hamflow.nn.block_head.BlockReadout). Padding edges give zero blocks.
Parameters are stored in float32; ``dtype`` is the compute dtype (float32, float64 or bfloat16).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import e3nn_jax as e3nn
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hamflow.errors import ConfigError
from hamflow.graph.batch import GraphBatch
from hamflow.graph.irreps import canonical_net_type, check_net_irreps, check_parity_rule
from hamflow.nn.block_head import BlockReadout
from hamflow.nn.dropout import irreps_dropout
from hamflow.nn.eagle import Eagle
from hamflow.nn.radial import EdgeChunk
from hamflow.nn.sparrow import Sparrow


class HamiltonianNetwork(nn.Module):
    """Backbone features -> per-edge orbital blocks (on-site from nodes, off-site from edges).

    dropout_rate: with ``dropout=True`` (the training step, which passes a ``"dropout"`` rng), whole
    irrep channels of the backbone's node and edge features are dropped before the readouts
    (hamflow.nn.dropout); ``dropout=False`` (the default: evaluation, inference) is deterministic.

    The steps of ``__call__`` without dropout are also methods (:data:`PHASE_METHODS`), so that the
    edges of a large structure can be fed in chunks (hamflow.infer.chunked): :meth:`backbone_step`
    (a step of the backbone by name), :meth:`onsite_blocks` and :meth:`edge_blocks`.
    """

    backbone: nn.Module
    shell_ls: tuple[int, ...]
    parity: bool
    spinful: bool = False
    spin_orbit: bool = False
    dropout_rate: float = 0.0

    def setup(self) -> None:
        head = {
            "shell_ls": self.shell_ls,
            "parity": self.parity,
            "spinful": self.spinful,
            "spin_orbit": self.spin_orbit,
        }
        self.onsite_head = BlockReadout(**head)
        self.offsite_head = BlockReadout(**head)

    def backbone_step(self, step: str, *args: Any) -> Any:
        """The backbone's method ``step`` (initial_nodes, block_messages, ...) applied to ``args``."""
        return getattr(self.backbone, step)(*args)

    def onsite_blocks(self, nodes: e3nn.IrrepsArray) -> jnp.ndarray:
        """(N, b, b) on-site blocks of every atom from the backbone's final node features."""
        return self.onsite_head(nodes)

    def edge_blocks(self, onsite: jnp.ndarray, edges: e3nn.IrrepsArray, chunk: EdgeChunk) -> jnp.ndarray:
        """(C, b, b) blocks of the chunk's edges: on-site edges take ``onsite`` (N, b, b) of their atom,
        the others the readout of their final ``edges`` features (C, irreps); padding edges zero."""
        offsite = self.offsite_head(edges)
        is_onsite = jnp.asarray(chunk.edge_onsite)[:, None, None]
        blocks = jnp.where(is_onsite, onsite[jnp.asarray(chunk.edge_src)], offsite)
        return jnp.where(jnp.asarray(chunk.edge_mask)[:, None, None], blocks, 0)

    def __call__(self, batch: GraphBatch, dropout: bool = False) -> jnp.ndarray:
        nodes, edges = self.backbone(batch)
        if dropout and self.dropout_rate > 0:
            node_key, edge_key = jax.random.split(self.make_rng("dropout"))
            nodes = irreps_dropout(nodes, self.dropout_rate, node_key)
            edges = irreps_dropout(edges, self.dropout_rate, edge_key)
        return self.edge_blocks(self.onsite_blocks(nodes), edges, EdgeChunk.of(batch))


#: Methods of HamiltonianNetwork that a chunked caller applies (the float cast of the params applies).
PHASE_METHODS = ("__call__", "backbone_step", "onsite_blocks", "edge_blocks")


def _cast_floats(dtype: Any):
    def cast(tree):
        return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)

    return cast


def build_model(
    net_type: str,
    shell_ls: Sequence[int],
    *,
    net_irreps: str,
    num_blocks: int,
    rmax: float,
    consider_parity: bool,
    spinful: bool = False,
    spin_orbit: bool = True,
    dtype: Any = jnp.float32,
    dropout_rate: float = 0.0,
) -> nn.Module:
    """The network for ``net_type`` (sparrow/normal, eagle/accurate) over the common basis ``shell_ls``.

    ``module.apply(params, batch)`` returns (E, B, B) real blocks (eV for H), or (E, 2B, 2B) complex
    when ``spinful``: with ``spin_orbit`` (the default) covariant under spin rotation and time-reversal
    even (H0 (x) 1 + i T . sigma, see hamflow.nn.block_head), else spin treated as invariant.
    Initialise with ``jax.jit(module.init)(key, batch)``; params are float32 whatever
    the compute ``dtype``. ``rmax``: the radial cutoff in Angstrom, as resolved by
    :func:`hamflow.config.train_config.radial_cutoff` (ValueError unless > 0). Raises ConfigError for
    an unknown net_type, eagle with consider_parity, odd irreps without parity, a non-positive
    num_blocks, or irreps that cannot form the blocks.
    dropout_rate (``[process.train.drop]``): see :class:`HamiltonianNetwork`; no parameters of its own.
    """
    kind = canonical_net_type(net_type)
    check_parity_rule(kind, consider_parity)
    if int(num_blocks) < 1:
        raise ConfigError("model.advanced.num_blocks", f"= {num_blocks!r}; must be >= 1")
    if not float(rmax) > 0:
        raise ValueError(f"the radial cutoff rmax must be > 0 Angstrom, got {rmax!r}")
    shells = tuple(int(l) for l in shell_ls)
    if not shells or any(l < 0 for l in shells):
        raise ConfigError(
            "data.graph.common_orbital_types", f"= {list(shell_ls)!r}; needs shells with l >= 0"
        )
    with_spin_orbit = bool(spinful) and bool(spin_orbit)
    irreps = check_net_irreps(
        net_irreps, shells, consider_parity=consider_parity, net_type=kind, spin_orbit=with_spin_orbit
    )

    backbone_class = Sparrow if kind == "sparrow" else Eagle
    backbone = backbone_class(
        irreps=str(irreps),
        num_blocks=int(num_blocks),
        rmax=float(rmax),
        parity=bool(consider_parity),
        dtype=dtype,
    )
    network = nn.map_variables(
        HamiltonianNetwork,
        "params",
        trans_in_fn=_cast_floats(dtype),
        trans_out_fn=_cast_floats(jnp.float32),
        init=True,
        mutable=True,
        methods=list(PHASE_METHODS),
    )
    return network(
        backbone=backbone,
        shell_ls=shells,
        parity=bool(consider_parity),
        spinful=bool(spinful),
        spin_orbit=with_spin_orbit,
        dropout_rate=float(dropout_rate),
    )


def init_params(module: nn.Module, batch: GraphBatch, seed: int, shapes: Any = None) -> Any:
    """Initial float32 params of ``module`` for ``batch``'s shapes, drawn on the host (no XLA compile).

    Same distribution as ``jax.jit(module.init)``: every layer here and in e3nn-jax (e3nn's default
    "path" gradient normalisation) draws its weights N(0, 1) and scales by the fan-in in the forward
    pass, and its biases are zero. Only the shapes are traced (jax.eval_shape), so this takes seconds
    where compiling the initialisers takes a minute on a CPU. Deterministic for a given ``seed``.
    shapes: the result of that ``jax.eval_shape`` when the caller has it (the program cache).
    """
    if shapes is None:
        shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), batch)
    rng = np.random.default_rng(seed)

    def draw(leaf: jax.ShapeDtypeStruct) -> jnp.ndarray:
        if len(leaf.shape) < 2:
            return jnp.zeros(leaf.shape, jnp.float32)
        return jnp.asarray(rng.standard_normal(leaf.shape), dtype=jnp.float32)

    return jax.tree.map(draw, shapes)


def count_parameters(params: Any) -> int:
    """Number of scalar parameters in a params pytree (arrays or jax.ShapeDtypeStruct leaves)."""
    return int(sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params)))
