"""An equivariant neighbour-sum baseline of the on-site blocks, fitted by least squares before training.

The on-site block of atom i (species s_i) depends on its environment. Its simplest E(3)-equivariant
model linear in fitted weights is a constant plus a sum over the neighbours j of i (the graph's
off-site edges i -> j, vector r_ij of length r, direction n): for each shell pair (a, b) and each
L = |l_a - l_b|..l_a + l_b with (-1)^L = (-1)^(l_a+l_b)

    x^L_ab(i) = delta_L0 c_{s_i a b} + sum_j sum_k w_{s_i s_j a b L k} phi_k(r_ij) Y^L(n_ij),
    phi_k(r) = exp(-((r - mu_k) / sigma)^2 / 2)

and the block follows from the irreps by Clebsch-Gordan coefficients (hamflow.nn.block_head), as for
the off-site baseline (hamflow.train.baseline). Y^L(R n) = D^L(R) Y^L(n) makes it exactly
rotation-equivariant; the parity rule keeps it inversion-equivariant. The constant c is the training
mean of the component and the weights w a ridge fit of what it leaves: where a test atom's neighbours
lie beyond the training distances the Gaussians vanish and the baseline falls back to the mean (the
least-squares intercept, with the Gaussians cancelling it, put one demo test geometry 2.5 eV off).
With the baseline the on-site offset of the normaliser is zero and the on-site scale is the RMS of
what the baseline leaves.

Units: r, mu and sigma in Angstrom, the baseline in the target's units (eV for H). K = NUM_RADIAL
Gaussians per centre species, evenly spread over its neighbours' training distances.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from hamflow.nn.block_head import _cg_basis
from hamflow.train.baseline import (
    NUM_RADIAL,
    _components,
    _scatter_plan,
    component_harmonics,
    components_to_blocks,
    edge_geometry,
    gaussians,
    shell_starts,
    standard_harmonics,
)

MAX_NODES_PER_SPECIES = 20_000  # atoms kept per species for the fit (the first ones seen)
RIDGE_ONSITE = 1e-5  # relative to the mean diagonal of the normal equations


@dataclass(frozen=True)
class OnsiteBaseline:
    """The fitted tables. weights: (S+1, S+1, C, K), [centre species, neighbour species]; intercept:
    (S+1, C) (non-zero on L = 0 components only); centres: (S+1, K) and widths: (S+1,) in Angstrom.
    C components of ``hamflow.train.baseline._components(shell_ls)``; species rows as in the
    Normaliser (the last row: unseen species, all zero)."""

    weights: np.ndarray
    intercept: np.ndarray
    centres: np.ndarray
    widths: np.ndarray

    def node_sums(
        self,
        shell_ls: Sequence[int],
        species_i: jnp.ndarray,
        species_j: jnp.ndarray,
        edge_src: jnp.ndarray,
        edge_vec: jnp.ndarray,
        neighbour: jnp.ndarray,
        num_nodes: int,
    ) -> jnp.ndarray:
        """(num_nodes, C, M) neighbour sums of these edges by centre atom (arguments as in
        :meth:`blocks`); additive over any split of the edges. JAX, jittable, float32."""
        _, _, lcol = _scatter_plan(tuple(int(l) for l in shell_ls))
        length, safe = edge_geometry(edge_vec, neighbour)
        harmonics = component_harmonics(safe, lcol)  # (E, C, M)
        radial = gaussians(length, jnp.asarray(self.centres)[species_i], jnp.asarray(self.widths)[species_i])
        coefficient = jnp.einsum("eck,ek->ec", jnp.asarray(self.weights)[species_i, species_j], radial)
        coefficient = jnp.where(neighbour[:, None], coefficient, 0.0)
        return jax.ops.segment_sum(coefficient[:, :, None] * harmonics, edge_src, num_segments=num_nodes)

    def blocks(
        self,
        shell_ls: Sequence[int],
        species_i: jnp.ndarray,
        species_j: jnp.ndarray,
        edge_src: jnp.ndarray,
        edge_vec: jnp.ndarray,
        neighbour: jnp.ndarray,
        onsite: jnp.ndarray,
        num_nodes: int,
        per_node: jnp.ndarray | None = None,
    ) -> jnp.ndarray:
        """(E, B, B) baseline blocks on the ``onsite`` (E,) edges, zero elsewhere; the sum runs over
        the ``neighbour`` (E,) edges (real off-site edges) by their centre atom ``edge_src``.
        species_i/j: (E,) species rows of the edge's centre and neighbour atoms; edge_vec (E, 3) in
        Angstrom; num_nodes: the number of atoms (static). ``per_node``: the sums of
        :meth:`node_sums` over all edges of the graph, when these edges are only a slice of them.
        JAX, jittable, float32."""
        shell_ls = tuple(int(l) for l in shell_ls)
        _, _, lcol = _scatter_plan(shell_ls)
        if per_node is None:
            per_node = self.node_sums(
                shell_ls, species_i, species_j, edge_src, edge_vec, neighbour, num_nodes
            )
        values = per_node[edge_src]  # (E, C, M): each edge reads its centre atom's sum
        constant = jnp.asarray(self.intercept)[species_i] * jnp.asarray(lcol == 0, jnp.float32)
        values = values.at[:, :, 0].add(constant)
        return components_to_blocks(jnp.where(onsite[:, None, None], values, 0.0), shell_ls)


class OnsiteBaselineFit:
    """Least squares for the on-site baseline: add the atoms of the training graphs, then solve."""

    def __init__(self, shell_ls: Sequence[int]) -> None:
        self.shell_ls = tuple(int(l) for l in shell_ls)
        self.components = _components(self.shell_ls)
        self.lmax = max((L for _, _, L, _ in self.components), default=0)
        self.starts = shell_starts(self.shell_ls)
        self.counts: dict[int, int] = {}
        # per centre species: list of (x (n, C, M), full (n, C), energy (n, nshell, nshell),
        # neighbour node (e,), neighbour species (e,), length (e,), harmonics (e, (lmax+1)^2))
        self.atoms: dict[int, list[tuple[np.ndarray, ...]]] = {}

    def add(
        self,
        node_species: np.ndarray,
        onsite_node: np.ndarray,
        blocks: np.ndarray,
        masks: np.ndarray,
        edge_src: np.ndarray,
        edge_dst: np.ndarray,
        edge_vec: np.ndarray,
    ) -> None:
        """The atoms of one graph. node_species (N,) species rows; onsite_node (n,) the atom of each
        on-site block, blocks/masks (n, B, B) real; edge_src/edge_dst (e,) and edge_vec (e, 3)
        Angstrom: the graph's off-site edges."""
        if len(onsite_node) == 0:
            return
        width = 2 * self.lmax + 1
        s = self.starts
        nshell = len(self.shell_ls)
        x = np.zeros((len(onsite_node), len(self.components), width))
        full = np.zeros((len(onsite_node), len(self.components)), dtype=bool)
        for c, (a, b, L, offset) in enumerate(self.components):
            rows, cols = slice(s[a], s[a + 1]), slice(s[b], s[b + 1])
            cg = _cg_basis(self.shell_ls[a], self.shell_ls[b])[offset : offset + 2 * L + 1]
            x[:, c, : 2 * L + 1] = np.einsum("eij,kij->ek", blocks[:, rows, cols], cg)
            full[:, c] = masks[:, rows, cols].all(axis=(1, 2))
        energy = np.zeros((len(onsite_node), nshell, nshell))
        for a in range(nshell):
            for b in range(nshell):
                sub = np.where(
                    masks[:, s[a] : s[a + 1], s[b] : s[b + 1]], blocks[:, s[a] : s[a + 1], s[b] : s[b + 1]], 0
                )
                energy[:, a, b] = np.sum(sub * sub, axis=(1, 2))
        sh = np.asarray(standard_harmonics(edge_vec, self.lmax), dtype=np.float64) if len(edge_vec) else None
        lengths = np.linalg.norm(edge_vec, axis=1) if len(edge_vec) else np.zeros(0)
        centre_species = node_species[onsite_node]
        for species in np.unique(centre_species).tolist():
            kept = self.counts.get(species, 0)
            if kept >= MAX_NODES_PER_SPECIES:
                continue
            sel = np.nonzero(centre_species == species)[0][: MAX_NODES_PER_SPECIES - kept]
            self.counts[species] = kept + len(sel)
            # local index of each kept atom; edges whose centre is a kept atom
            local = np.full(len(node_species), -1, dtype=np.int64)
            local[onsite_node[sel]] = np.arange(len(sel))
            on_edges = np.nonzero(local[edge_src] >= 0)[0] if len(edge_src) else np.zeros(0, np.int64)
            self.atoms.setdefault(species, []).append(
                (
                    x[sel],
                    full[sel],
                    energy[sel],
                    local[edge_src[on_edges]],
                    node_species[edge_dst[on_edges]],
                    lengths[on_edges],
                    sh[on_edges] if sh is not None else np.zeros((0, (self.lmax + 1) ** 2)),
                )
            )

    def solve(self, num_species: int) -> tuple[OnsiteBaseline, np.ndarray]:
        """(OnsiteBaseline, explained) where explained (S+1, nshell, nshell) in [0, 1] is the fraction
        of each on-site shell-pair block's mean square that the baseline removes on the fitted atoms."""
        nshell = len(self.shell_ls)
        n_comp = len(self.components)
        weights = np.zeros((num_species + 1, num_species + 1, n_comp, NUM_RADIAL))
        intercept = np.zeros((num_species + 1, n_comp))
        centres = np.zeros((num_species + 1, NUM_RADIAL))
        widths = np.ones(num_species + 1)
        explained = np.zeros((num_species + 1, nshell, nshell))
        for species, chunks in self.atoms.items():
            x = np.concatenate([c[0] for c in chunks])
            full = np.concatenate([c[1] for c in chunks])
            energy = np.concatenate([c[2] for c in chunks]).sum(axis=0)
            shifts = np.cumsum([0] + [len(c[0]) for c in chunks])[:-1]
            atom = np.concatenate([c[3] + shift for c, shift in zip(chunks, shifts, strict=True)])
            nb_species = np.concatenate([c[4] for c in chunks])
            lengths = np.concatenate([c[5] for c in chunks])
            sh = np.concatenate([c[6] for c in chunks])
            n_atoms = len(x)
            if len(lengths):
                lo, hi = float(lengths.min()), float(lengths.max())
            else:
                lo, hi = 1.0, 1.0
            spacing = max((hi - lo) / (NUM_RADIAL - 3), 0.05)
            mu = np.linspace(lo - spacing, hi + spacing, NUM_RADIAL)
            width = float(mu[1] - mu[0])
            centres[species], widths[species] = mu, width
            phi = gaussians(
                lengths, np.broadcast_to(mu, (len(lengths), NUM_RADIAL)), np.full(len(lengths), width), np
            )
            removed = np.zeros((nshell, nshell))
            for c, (a, b, L, _) in enumerate(self.components):
                keep = full[:, c]
                # features (n_atoms, 2L+1, S+1, K): sum over neighbours of phi_k(r) Y^L_m(n)
                feats = np.zeros((n_atoms, 2 * L + 1, num_species + 1, NUM_RADIAL))
                values = phi[:, None, :] * sh[:, L * L : L * L + 2 * L + 1, None]
                np.add.at(feats, (atom, slice(None), nb_species), values)
                p = feats.reshape(n_atoms, 2 * L + 1, -1)[keep].reshape(-1, (num_species + 1) * NUM_RADIAL)
                y = x[keep, c, : 2 * L + 1].reshape(-1)
                if not keep.any():
                    continue
                # the constant is the training mean; the neighbour sum fits what is left, its ridge
                # shrinking towards the mean, and far from the training distances (where the
                # Gaussians vanish) the baseline falls back to the mean instead of extrapolating
                mean = float(y.mean()) if L == 0 else 0.0
                gram = p.T @ p
                ridge = RIDGE_ONSITE * max(float(np.trace(gram)) / gram.shape[0], 1e-30)
                w = np.linalg.solve(gram + ridge * np.eye(gram.shape[0]), p.T @ (y - mean))
                fitted = p @ w + mean
                removed[a, b] += float(np.sum(y * y) - np.sum((y - fitted) ** 2))
                intercept[species, c] = mean
                weights[species, :, c] = w.reshape(num_species + 1, NUM_RADIAL)
            explained[species] = np.clip(removed / np.maximum(energy, 1e-300), 0.0, 1.0)
        return OnsiteBaseline(
            weights.astype(np.float32),
            intercept.astype(np.float32),
            centres.astype(np.float32),
            widths.astype(np.float32),
        ), explained
