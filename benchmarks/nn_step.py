"""Benchmark of the networks: parameters, compile time and forward / forward+backward time per graph.

Builds one molecule-like graph of ``--atoms`` atoms (random positions at least 0.9 A apart, every
ordered pair an edge: atoms^2 edges, on-site included; 10 atoms -> 100 edges) in the common basis
``--shells`` (default s3p2d2), and for each network type at its default ``net_irreps``
(hamflow.graph.irreps.default_net_irreps) and ``--blocks`` blocks prints: parameter count, XLA
compile time of the forward and of the training gradient (value_and_grad of the mean squared block),
the median wall time of each over ``--repeat`` runs after compilation, and the equivariance error of
the forward: max |D H D^T - H(R .)| over all blocks for a random rotation R, relative to max |H|.

    python benchmarks/nn_step.py [--atoms 10] [--blocks 3] [--repeat 10] [--dtype float32]
                                 [--nets sparrow,eagle] [--shells 0,0,0,1,1,2,2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy.spatial.transform import Rotation

from hamflow.graph.basis import CommonBasis
from hamflow.graph.batch import GraphBatch
from hamflow.graph.irreps import default_net_irreps
from hamflow.nn.model import build_model, count_parameters, init_params
from hamflow.nn.wigner import basis_rotation


def random_molecule(num_atoms: int, seed: int) -> np.ndarray:
    """(num_atoms, 3) positions in Angstrom, each new atom 0.9-1.6 A from a random earlier one."""
    rng = np.random.default_rng(seed)
    positions = [np.zeros(3)]
    while len(positions) < num_atoms:
        anchor = positions[rng.integers(len(positions))]
        step = rng.normal(size=3)
        candidate = anchor + rng.uniform(0.9, 1.6) * step / np.linalg.norm(step)
        if min(np.linalg.norm(candidate - p) for p in positions) >= 0.9:
            positions.append(candidate)
    return np.array(positions)


def all_pairs_batch(positions: np.ndarray, numbers: np.ndarray, basis_size: int) -> GraphBatch:
    """One graph, every ordered atom pair (i, j) an edge with R = 0."""
    n = len(numbers)
    src, dst = (a.ravel().astype(np.int32) for a in np.meshgrid(np.arange(n), np.arange(n), indexing="ij"))
    edges = len(src)
    zeros = np.zeros((edges, basis_size, basis_size), np.float32)
    return GraphBatch(
        atomic_numbers=numbers.astype(np.int32),
        node_graph=np.zeros(n, np.int32),
        node_mask=np.ones(n, bool),
        edge_src=src,
        edge_dst=dst,
        edge_vec=(positions[dst] - positions[src]).astype(np.float32),
        edge_onsite=src == dst,
        edge_graph=np.zeros(edges, np.int32),
        edge_mask=np.ones(edges, bool),
        graph_mask=np.ones(1, bool),
        labels=zeros,
        label_mask=np.ones(zeros.shape, bool),
        overlap=zeros,
    )


def timed(function, *args) -> float:
    start = time.perf_counter()
    jax.block_until_ready(function(*args))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--atoms", type=int, default=10)
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16"])
    parser.add_argument("--nets", default="sparrow,eagle")
    parser.add_argument("--shells", default="0,0,0,1,1,2,2")
    args = parser.parse_args()
    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    dtype = jnp.dtype(args.dtype)

    shells = tuple(int(v) for v in args.shells.split(","))
    basis = CommonBasis(shells)
    positions = random_molecule(args.atoms, seed=0)
    numbers = np.random.default_rng(1).choice([1, 6, 7, 8], size=args.atoms)
    batch = all_pairs_batch(positions, numbers, basis.size)
    device = jax.devices()[0].platform
    print(f"device {device}, {batch.num_edges} edges, basis {args.shells} (B = {basis.size}),")
    print(f"{args.blocks} blocks, {args.dtype}; times are medians of {args.repeat} runs after compilation\n")
    header = (
        f"{'net':8} {'irreps':48} {'params':>10} {'compile fwd':>12} {'compile grad':>13} "
        f"{'fwd ms':>8} {'fwd+bwd ms':>11} {'equiv err':>10}"
    )
    print(header)
    print("-" * len(header))
    for net_type in args.nets.split(","):
        parity = net_type == "sparrow"
        irreps = default_net_irreps(basis, consider_parity=parity, net_type=net_type)
        model = build_model(
            net_type,
            shells,
            net_irreps=irreps,
            num_blocks=args.blocks,
            rmax=7.5,
            consider_parity=parity,
            dtype=dtype,
        )
        params = init_params(model, batch, seed=0)
        forward = jax.jit(model.apply)

        def loss(p, b, apply=model.apply):
            return jnp.mean(apply(p, b).astype(jnp.float32) ** 2)

        gradient = jax.jit(jax.value_and_grad(loss))
        compile_forward = timed(forward, params, batch)
        compile_gradient = timed(gradient, params, batch)
        forward_ms = statistics.median(timed(forward, params, batch) for _ in range(args.repeat)) * 1e3
        gradient_ms = statistics.median(timed(gradient, params, batch) for _ in range(args.repeat)) * 1e3
        rotation = Rotation.random(random_state=2).as_matrix()
        rotated_batch = all_pairs_batch(positions @ rotation.T, numbers, basis.size)
        blocks = np.asarray(forward(params, batch), np.float64)
        rotated = np.asarray(forward(params, rotated_batch), np.float64)
        d = basis_rotation(shells, rotation)
        error = np.max(np.abs(np.einsum("ij,ejk,lk->eil", d, blocks, d) - rotated)) / np.max(np.abs(blocks))
        print(
            f"{net_type:8} {irreps:48} {count_parameters(params):>10,} {compile_forward:>11.1f}s "
            f"{compile_gradient:>12.1f}s {forward_ms:>8.1f} {gradient_ms:>11.1f} {error:>10.1e}"
        )


if __name__ == "__main__":
    main()
