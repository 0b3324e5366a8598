"""An equivariant environment baseline of the off-site blocks: what the two-centre baseline leaves,
fitted by least squares on the atoms around the pair.

The two-centre baseline (hamflow.train.baseline) makes an off-site block a function of the pair
vector alone. The block of the edge i -> j also depends on the other atoms k around i and j. The
simplest E(3)-equivariant model of that, linear in fitted weights, is built from each end's
neighbour density (the same sums as the on-site baseline's, hamflow.train.onsite_baseline)

    A^l_c(s, q) = sum_{k in N(c), s_k = s} phi_q(r_ck) Y^l(n_ck)          (c = i or j)

and adds to each component x^L_ab of the block (shell pair (a, b), L with (-1)^L = (-1)^(l_a+l_b))

    sum_{side c, s, q} [ w0 A^L_c(s, q)  +  sum_p w_p Y^L(u_c) P_p(s, q) ]
    with P_p(s, q) = Y^p(u_c) . A^p_c(s, q) / (2p + 1) = sum_k phi_q(r_ck) P_p(cos angle(u_c, n_ck))

where u_i = n_ij and u_j = n_ji, and P_p the Legendre polynomials p < NUM_ANGULAR (addition theorem
for the component-normalised harmonics). The first term carries the directions of the neighbours,
the second the bond angles they make with the pair, weighted by their distances. Both commute with
rotations (Y^L(R n) = D^L(R) Y^L(n)) and, since only parity-matching L are fitted, with inversion.
The weights w (per species pair, component, side, neighbour species, radial function, term) are a
ridge fit of the two-centre remainder on the training graphs. Far from the training distances the
Gaussians vanish and the baseline falls back to the two-centre one.

The components of parity (-1)^(L+1) (e.g. the antisymmetric, L = 1 part of a p-p block), which no
function of the pair vector alone can carry, get the pseudotensor of each end's neighbour density

    sum_{side c, s, q} w' [Y^1(u_c) (x) A^L_c(s, q)]_L        (Clebsch-Gordan coupling 1 x L -> L)

(for L = 1 the cross product u_c x A^1_c: the normal of the plane of the pair and a neighbour), with
parity (-1)^(L+1) as those components need. Its weights w' are fitted the same way, on the raw
components (the two-centre baseline leaves them whole).

Units: distances in Angstrom (the radial functions are the on-site baseline's: NUM_RADIAL Gaussians
per centre species), the baseline in the target's units (eV for H).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np

from hamflow.nn.block_head import _cg_basis
from hamflow.train.baseline import (
    NUM_RADIAL,
    Baseline,
    _components,
    component_harmonics,
    components_to_blocks,
    edge_geometry,
    gaussians,
    shell_starts,
    standard_harmonics,
    validated_ridge,
)

NUM_ANGULAR = 3  # Legendre orders p = 0, 1, 2 of the bond angle
RIDGE_ENVIRONMENT = 1e-4  # relative to the mean diagonal of the normal equations
MAX_EDGES_PER_PAIR = 10_000  # off-site edges kept per species pair for the fit (the first ones seen)
CHUNK_EDGES = 4096  # edges per chunk when evaluating (bounds the (chunk, C, F) weight gather)


def num_features(num_species: int) -> int:
    """F: features per component, 2 sides x (S+1) neighbour species x NUM_RADIAL x (1 + NUM_ANGULAR)."""
    return 2 * (num_species + 1) * NUM_RADIAL * (1 + NUM_ANGULAR)


def num_pseudo_features(num_species: int) -> int:
    """F': features per parity-(-1)^(L+1) component, 2 sides x (S+1) neighbour species x NUM_RADIAL."""
    return 2 * (num_species + 1) * NUM_RADIAL


def _pseudo_features(density, sh_sides, L: int, xp=jnp):
    """(E, 2, S+1, K, 2L+1) [Y^1(u_side) (x) A^L_side]_L of the densities (E, 2, S+1, K, LM) and the
    side directions' harmonics (E, 2, LM): parity (-1)^(L+1) under inversion."""
    cg = xp.asarray(np.asarray(e3nn.clebsch_gordan(1, L, L), np.float64), dtype=density.dtype)
    return xp.einsum("eai,easkj,ijm->easkm", sh_sides[..., 1:4], density[..., L * L : L * L + 2 * L + 1], cg)


def _lmax_density(shell_ls: tuple[int, ...]) -> int:
    comps = _components(shell_ls)
    return max(max((L for _, _, L, _ in comps), default=0), NUM_ANGULAR - 1)


def _parity_signs(lmax: int, xp=jnp):
    """((lmax+1)^2,) (-1)^l of each harmonic column: Y^l(-n) = (-1)^l Y^l(n)."""
    return xp.asarray(np.concatenate([[(-1.0) ** l] * (2 * l + 1) for l in range(lmax + 1)]))


@dataclass(frozen=True)
class EnvironmentBaseline:
    """The fitted tables. weights: (S+1, S+1, C, F) [species of i, species of j, component, feature]
    with F = ``num_features(S)`` in (side, neighbour species, radial, term) order; pseudo_weights:
    (S+1, S+1, C', F') for the C' components of ``_components(shell_ls, forbidden=True)``, F' =
    ``num_pseudo_features(S)`` in (side, neighbour species, radial) order; centres: (S+1, K) and
    widths: (S+1,) in Angstrom, per centre species (the on-site baseline's radial functions)."""

    weights: np.ndarray
    centres: np.ndarray
    widths: np.ndarray
    pseudo_weights: np.ndarray | None = None  # (S+1, S+1, C', F'): None in files written before it

    def node_density(
        self,
        shell_ls: Sequence[int],
        species_i: jnp.ndarray,
        species_j: jnp.ndarray,
        edge_src: jnp.ndarray,
        edge_vec: jnp.ndarray,
        offsite: jnp.ndarray,
        num_nodes: int,
    ) -> jnp.ndarray:
        """(num_nodes, S+1, K, LM) neighbour densities of these edges by centre atom (arguments as in
        :meth:`blocks`); additive over any split of the edges. JAX, jittable, float32."""
        n_species = int(self.weights.shape[0])
        length, safe = edge_geometry(edge_vec, offsite)
        sh = standard_harmonics(safe, _lmax_density(tuple(int(l) for l in shell_ls)))  # (E, LM)
        radial = gaussians(length, jnp.asarray(self.centres)[species_i], jnp.asarray(self.widths)[species_i])
        onehot = jnp.logical_and(species_j[:, None] == jnp.arange(n_species)[None, :], offsite[:, None])
        contrib = onehot[:, :, None, None] * radial[:, None, :, None] * sh[:, None, None, :]
        return jax.ops.segment_sum(contrib, edge_src, num_segments=num_nodes)

    def blocks(
        self,
        shell_ls: Sequence[int],
        species_i: jnp.ndarray,
        species_j: jnp.ndarray,
        edge_src: jnp.ndarray,
        edge_dst: jnp.ndarray,
        edge_vec: jnp.ndarray,
        offsite: jnp.ndarray,
        num_nodes: int,
        density: jnp.ndarray | None = None,
    ) -> jnp.ndarray:
        """(E, B, B) baseline blocks on the ``offsite`` (E,) edges (real off-site edges), zero elsewhere;
        the neighbour densities sum over the same edges by their centre atom ``edge_src``.
        species_i/j: (E,) species rows of the edge's atoms; edge_vec (E, 3) Angstrom; num_nodes: atoms
        (static). ``density``: :meth:`node_density` summed over all edges of the graph, when these
        edges are only a slice of them. JAX, jittable, float32."""
        shell_ls = tuple(int(l) for l in shell_ls)
        lmax = _lmax_density(shell_ls)
        length, safe = edge_geometry(edge_vec, offsite)
        sh = standard_harmonics(safe, lmax)  # (E, LM)
        if density is None:
            density = self.node_density(
                shell_ls, species_i, species_j, edge_src, edge_vec, offsite, num_nodes
            )
        terms = [(self.weights, False)]
        if self.pseudo_weights is not None and _components(shell_ls, forbidden=True):
            terms.append((self.pseudo_weights, True))
        blocks = 0.0
        for weights, pseudo in terms:  # the polar components, then the parity-(-1)^(L+1) ones
            ends = (species_i, species_j, density[edge_src], density[edge_dst])
            values = _edge_values(jnp.asarray(weights), shell_ls, *ends, safe, sh, pseudo)
            values = jnp.where(offsite[:, None, None], values, 0.0)
            blocks = blocks + components_to_blocks(values, shell_ls, pseudo)
        return blocks


def _edge_values(
    weights, shell_ls, species_i, species_j, dens_i, dens_j, vec, sh, pseudo: bool = False
) -> jnp.ndarray:
    """(E, C, M) component values of every edge, in chunks of CHUNK_EDGES edges (``pseudo``: the
    parity-(-1)^(L+1) components and their pseudotensor term)."""
    n_edges = int(vec.shape[0])
    comps = _components(shell_ls, pseudo)
    width = 2 * max((L for _, _, L, _ in comps), default=0) + 1
    chunk_values = _chunk_pseudo_values if pseudo else _chunk_values
    if n_edges <= CHUNK_EDGES:
        return chunk_values(weights, shell_ls, species_i, species_j, dens_i, dens_j, vec, sh)
    n_chunks = -(-n_edges // CHUNK_EDGES)
    pad = n_chunks * CHUNK_EDGES - n_edges

    def chunked(x):
        x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))
        return x.reshape(n_chunks, CHUNK_EDGES, *x.shape[1:])

    def one(args):
        return chunk_values(weights, shell_ls, *args)

    parts = (species_i, species_j, dens_i, dens_j, vec, sh)
    out = jax.lax.map(one, tuple(chunked(p) for p in parts))
    return out.reshape(n_chunks * CHUNK_EDGES, len(comps), width)[:n_edges]


def _chunk_values(weights, shell_ls, species_i, species_j, dens_i, dens_j, vec, sh) -> jnp.ndarray:
    comps = _components(shell_ls)
    lcol = np.asarray([L for _, _, L, _ in comps], dtype=np.int32)
    width = 2 * int(lcol.max(initial=0)) + 1
    n_edges, n_species, n_radial, _ = dens_i.shape
    density = jnp.stack([dens_i, dens_j], axis=1)  # (E, 2, S+1, K, LM)
    # the directions u_i = n_ij and u_j = n_ji = -n_ij
    sh_sides = jnp.stack([sh, sh * _parity_signs(int(np.sqrt(sh.shape[1])) - 1)], axis=1)  # (E, 2, LM)
    angular = jnp.stack(
        [
            jnp.einsum(
                "easkm,eam->eask", density[..., p * p : (p + 1) ** 2], sh_sides[:, :, p * p : (p + 1) ** 2]
            )
            / (2 * p + 1)
            for p in range(NUM_ANGULAR)
        ],
        axis=-1,
    )  # (E, 2, S+1, K, P)
    w = weights[species_i, species_j].reshape(n_edges, len(comps), 2, n_species, n_radial, 1 + NUM_ANGULAR)
    # angular term: scalar coefficient per side times Y^L(u_side)
    coef = jnp.einsum("ecaskp,easkp->eca", w[..., 1:], angular)  # (E, C, 2)
    harmonics = component_harmonics(vec, lcol)  # (E, C, M) of n_ij
    side_sign = jnp.asarray(np.where(lcol % 2 == 1, -1.0, 1.0), jnp.float32)  # Y^L(n_ji) = (-1)^L Y^L(n_ij)
    values = (coef[:, :, 0] + coef[:, :, 1] * side_sign)[:, :, None] * harmonics
    # density term, by L (the columns of A^L)
    for L in sorted(set(lcol.tolist())):
        cols = np.nonzero(lcol == L)[0]
        block = density[..., L * L : L * L + 2 * L + 1]  # (E, 2, S+1, K, 2L+1)
        part = jnp.einsum("ecask,easkm->ecm", w[:, cols][..., 0], block)
        values = values.at[:, cols, : 2 * L + 1].add(part)
    return values.reshape(n_edges, len(comps), width)


def _chunk_pseudo_values(weights, shell_ls, species_i, species_j, dens_i, dens_j, vec, sh) -> jnp.ndarray:
    del vec  # the pair direction enters through sh
    comps = _components(shell_ls, forbidden=True)
    lcol = np.asarray([L for _, _, L, _ in comps], dtype=np.int32)
    width = 2 * int(lcol.max(initial=0)) + 1
    n_edges, n_species, n_radial, _ = dens_i.shape
    density = jnp.stack([dens_i, dens_j], axis=1)  # (E, 2, S+1, K, LM)
    sh_sides = jnp.stack([sh, sh * _parity_signs(int(np.sqrt(sh.shape[1])) - 1)], axis=1)  # (E, 2, LM)
    w = weights[species_i, species_j].reshape(n_edges, len(comps), 2, n_species, n_radial)
    values = jnp.zeros((n_edges, len(comps), width), jnp.float32)
    for L in sorted(set(lcol.tolist())):
        cols = np.nonzero(lcol == L)[0]
        part = jnp.einsum("ecask,easkm->ecm", w[:, cols], _pseudo_features(density, sh_sides, L))
        values = values.at[:, cols, : 2 * L + 1].add(part)
    return values


class EnvironmentBaselineFit:
    """Least squares for the environment baseline: add the training graphs, then solve on the
    two-centre remainder (needs the solved two-centre and on-site baselines)."""

    def __init__(self, shell_ls: Sequence[int]) -> None:
        self.shell_ls = tuple(int(l) for l in shell_ls)
        self.components = _components(self.shell_ls)
        self.pseudo_components = _components(self.shell_ls, forbidden=True)
        self.starts = shell_starts(self.shell_ls)
        self.lmax = _lmax_density(self.shell_ls)
        self.counts: dict[tuple[int, int], int] = {}
        # per graph: (node species (N,), src (e,), dst (e,), lengths (e,), harmonics (e, LM)) of its
        # off-site edges; per species pair: list of (graph, edge index, x (n, C, M), full (n, C),
        # x' (n, C', M'), full' (n, C')) with ' the parity-(-1)^(L+1) components
        self.graphs: list[tuple[np.ndarray, ...]] = []
        self.edges: dict[tuple[int, int], list[tuple[np.ndarray | int, ...]]] = {}

    def add(
        self,
        node_species: np.ndarray,
        edge_src: np.ndarray,
        edge_dst: np.ndarray,
        edge_vec: np.ndarray,
        blocks: np.ndarray,
        masks: np.ndarray,
    ) -> None:
        """The off-site edges of one graph: node_species (N,) species rows, edge_src/dst (e,),
        edge_vec (e, 3) Angstrom, real blocks and masks (e, B, B)."""
        if len(edge_src) == 0:
            return
        si, sj = node_species[edge_src], node_species[edge_dst]
        wanted = []
        for pair in sorted(set(zip(si.tolist(), sj.tolist(), strict=True))):
            kept = self.counts.get(pair, 0)
            if kept >= MAX_EDGES_PER_PAIR:
                continue
            sel = np.nonzero((si == pair[0]) & (sj == pair[1]))[0][: MAX_EDGES_PER_PAIR - kept]
            self.counts[pair] = kept + len(sel)
            wanted.append((pair, sel))
        if not wanted:
            return
        graph = len(self.graphs)
        sh = np.asarray(standard_harmonics(edge_vec, self.lmax), dtype=np.float64)
        self.graphs.append(
            (node_species, np.asarray(edge_src), np.asarray(edge_dst), np.linalg.norm(edge_vec, axis=1), sh)
        )
        for pair, sel in wanted:
            x, full = self._project(blocks[sel], masks[sel], self.components)
            x_pseudo, full_pseudo = self._project(blocks[sel], masks[sel], self.pseudo_components)
            self.edges.setdefault(pair, []).append((graph, sel, x, full, x_pseudo, full_pseudo))

    def _project(
        self, blocks: np.ndarray, masks: np.ndarray, components: Sequence[tuple[int, int, int, int]]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(x (n, C, M), full (n, C)): the (n, B, B) blocks' irreps components, zero-padded to M =
        2 Lmax + 1, and whether each component's shell-pair block is fully labelled."""
        width = 2 * max((L for _, _, L, _ in components), default=0) + 1
        s = self.starts
        x = np.zeros((len(blocks), len(components), width))
        full = np.zeros((len(blocks), len(components)), dtype=bool)
        for c, (a, b, L, offset) in enumerate(components):
            rows, cols = slice(s[a], s[a + 1]), slice(s[b], s[b + 1])
            cg = _cg_basis(self.shell_ls[a], self.shell_ls[b])[offset : offset + 2 * L + 1]
            x[:, c, : 2 * L + 1] = np.einsum("eij,kij->ek", blocks[:, rows, cols], cg)
            full[:, c] = masks[:, rows, cols].all(axis=(1, 2))
        return x, full

    def _features(
        self, centres: np.ndarray, widths: np.ndarray, num_species: int
    ) -> list[tuple[np.ndarray, ...]]:
        """Per graph: (density (N, S+1, K, LM), edge harmonics (e, LM)) with the given radial functions."""
        out = []
        for node_species, src, dst, lengths, sh in self.graphs:
            centre = node_species[src]
            phi = gaussians(lengths, centres[centre], widths[centre], np)  # (e, K)
            onehot = node_species[dst][:, None] == np.arange(num_species + 1)[None, :]
            contrib = onehot[:, :, None, None] * phi[:, None, :, None] * sh[:, None, None, :]
            density = np.zeros((len(node_species), num_species + 1, NUM_RADIAL, sh.shape[1]))
            np.add.at(density, src, contrib)
            out.append((density, sh))
        return out

    def solve(
        self, num_species: int, two_centre: Baseline, centres: np.ndarray, widths: np.ndarray
    ) -> tuple[EnvironmentBaseline, np.ndarray]:
        """(EnvironmentBaseline, explained) where explained (S+1, S+1, nshell, nshell) in [0, 1] is the
        fraction of the two-centre remainder's mean square (per shell-pair block, on the fitted edges)
        that this baseline removes. centres (S+1, K) / widths (S+1,): the on-site baseline's."""
        nshell = len(self.shell_ls)
        n_comp = len(self.components)
        n_feat = num_features(num_species)
        weights = np.zeros((num_species + 1, num_species + 1, n_comp, n_feat))
        n_pseudo = num_pseudo_features(num_species)
        pseudo_weights = np.zeros((num_species + 1, num_species + 1, len(self.pseudo_components), n_pseudo))
        explained = np.zeros((num_species + 1, num_species + 1, nshell, nshell))
        per_graph = self._features(centres, widths, num_species)
        signs = _parity_signs(self.lmax, np)
        for (si, sj), chunks in self.edges.items():
            x = np.concatenate([c[2] for c in chunks])
            full = np.concatenate([c[3] for c in chunks])
            edge_graph = np.concatenate([np.full(len(sel), graph) for graph, sel, *_ in chunks])
            dens_i, dens_j, sh = [], [], []
            for graph, sel, *_ in chunks:
                density, edge_sh = per_graph[graph]
                src, dst = self.graphs[graph][1][sel], self.graphs[graph][2][sel]
                dens_i.append(density[src])
                dens_j.append(density[dst])
                sh.append(edge_sh[sel])
            density = np.stack([np.concatenate(dens_i), np.concatenate(dens_j)], axis=1)  # (n, 2, S+1, K, LM)
            sh = np.concatenate(sh)
            sh_sides = np.stack([sh, sh * signs], axis=1)  # (n, 2, LM)
            angular = np.stack(
                [
                    np.einsum(
                        "naskm,nam->nask",
                        density[..., p * p : (p + 1) ** 2],
                        sh_sides[:, :, p * p : (p + 1) ** 2],
                    )
                    / (2 * p + 1)
                    for p in range(NUM_ANGULAR)
                ],
                axis=-1,
            )  # (n, 2, S+1, K, P)
            # the two-centre remainder, in component space
            r = np.concatenate([self.graphs[graph][3][sel] for graph, sel, *_ in chunks])  # (n,) Angstrom
            mu = np.broadcast_to(np.asarray(two_centre.centres[si, sj], np.float64), (len(r), NUM_RADIAL))
            phi2 = gaussians(r, mu, np.full(len(r), float(two_centre.widths[si, sj])), np)
            coefficient = phi2 @ np.asarray(two_centre.weights[si, sj], dtype=np.float64).T  # (n, C)
            removed = np.zeros((nshell, nshell))
            left_energy = np.zeros((nshell, nshell))
            for c, (a, b, L, _) in enumerate(self.components):
                keep = full[:, c]
                if keep.sum() < 2:
                    continue
                m = 2 * L + 1
                y_l = sh[keep, L * L : L * L + m]
                rem = x[keep, c, :m] - coefficient[keep, c][:, None] * y_l  # (n, M)
                dens_part = np.moveaxis(density[keep][..., L * L : L * L + m], -1, 1)  # (n, M, 2, S+1, K)
                ang_part = (
                    np.stack([y_l, y_l * (-1.0) ** L], axis=2)[:, :, :, None, None, None]
                    * angular[keep][:, None]
                )  # (n, M, 2, S+1, K, P)
                feats = np.concatenate([dens_part[..., None], ang_part], axis=-1).reshape(-1, n_feat)
                y, w, fitted = validated_ridge(
                    feats, rem.reshape(-1), np.repeat(edge_graph[keep], m), RIDGE_ENVIRONMENT
                )
                weights[si, sj, c] = w
                removed[a, b] += float(np.sum(y * y) - np.sum((y - fitted) ** 2))
                left_energy[a, b] += float(np.sum(y * y))
            # the parity-(-1)^(L+1) components: the two-centre baseline leaves them whole
            x_pseudo = np.concatenate([c[4] for c in chunks])
            full_pseudo = np.concatenate([c[5] for c in chunks])
            for c, (a, b, L, _) in enumerate(self.pseudo_components):
                keep = full_pseudo[:, c]
                if keep.sum() < 2:
                    continue
                m = 2 * L + 1
                feats = np.moveaxis(_pseudo_features(density[keep], sh_sides[keep], L, np), -1, 1)
                y, w, fitted = validated_ridge(
                    feats.reshape(-1, n_pseudo),
                    x_pseudo[keep, c, :m].reshape(-1),
                    np.repeat(edge_graph[keep], m),
                    RIDGE_ENVIRONMENT,
                )
                pseudo_weights[si, sj, c] = w
                removed[a, b] += float(np.sum(y * y) - np.sum((y - fitted) ** 2))
                left_energy[a, b] += float(np.sum(y * y))
            explained[si, sj] = np.clip(removed / np.maximum(left_energy, 1e-300), 0.0, 1.0)
        return EnvironmentBaseline(
            weights.astype(np.float32),
            np.asarray(centres, np.float32),
            np.asarray(widths, np.float32),
            pseudo_weights.astype(np.float32),
        ), explained
