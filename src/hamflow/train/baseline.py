"""An equivariant two-centre baseline of the off-site blocks, fitted by least squares before training.

Off-site blocks of all-electron Hamiltonians are large (core-valence couplings of tens of eV) and
depend mostly on the distance and direction of the pair; the network then has to resolve a small
many-body variation on top of a large two-centre part. The baseline takes the two-centre part out:
for an off-site edge of species (s_i, s_j) with vector r (length r, direction n), each shell pair
(a, b) with angular momenta (l_a, l_b) and each L = |l_a - l_b|..l_a + l_b with (-1)^L = (-1)^(l_a+l_b)

    x^L_ab(r) = c_{s_i s_j a b L}(r) Y^L(n),    c(r) = sum_k w_k exp(-((r - mu_k) / sigma)^2 / 2)

and the block follows from the irreps by Clebsch-Gordan coefficients (hamflow.nn.block_head). This is
the most general two-centre block that is a function of the pair vector alone and exactly
E(3)-equivariant: Y^L(R n) = D^L(R) Y^L(n), and only parity-matching L survive inversion. The weights w
are a linear least-squares fit (ridge-regularised) on the training structures, done in one streaming
pass with the normaliser's statistics, so the normaliser's off-site scale becomes the RMS of what
the baseline leaves. The network predicts that remainder: prediction = y * scale + offset + baseline.

Units: r and mu in Angstrom, the baseline in the target's units (eV for H). K = NUM_RADIAL Gaussians
per species pair, evenly spread over the pair's training distances (padded by one spacing).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np

from hamflow.nn.block_head import _cg_basis
from hamflow.nn.wigner import STANDARD_TO_E3NN_AXES

NUM_RADIAL = 8
RIDGE = 1e-8  # relative to the mean diagonal of the normal equations
MAX_EDGES_PER_PAIR = 50_000  # edges kept per species pair for the fit (the first ones seen)


def shell_starts(shell_ls: Sequence[int]) -> np.ndarray:
    """(nshell + 1,) first orbital of each shell in the common basis."""
    return np.concatenate([[0], np.cumsum([2 * l + 1 for l in shell_ls])]).astype(np.int64)


def allowed_ls(la: int, lb: int) -> list[int]:
    """L of the shell pair's irreps that a function of the pair vector can carry: parity (-1)^L."""
    return [L for L in range(abs(la - lb), la + lb + 1) if (L - la - lb) % 2 == 0]


def standard_harmonics(vectors: np.ndarray | jnp.ndarray, lmax: int) -> jnp.ndarray:
    """Real spherical harmonics Y^L_M of the directions of (E, 3) Cartesian vectors, L = 0..lmax in
    the standard m order, 'component' normalised (|Y^L|^2 = 2L + 1): (E, (lmax + 1)^2).

    A host array (the normaliser's fits, graph by graph) goes through one compiled program of
    :data:`HOST_CHUNK` rows per ``lmax``, chunk by chunk: evaluated op by op, e3nn's polynomials
    cost ~50 ms of dispatch per graph, and each new shape costs ~0.7 s of tracing (e3nn builds
    them with sympy), most of a warm start-up's normaliser fit."""
    if isinstance(vectors, np.ndarray) and vectors.ndim == 2:
        rows = len(vectors)
        dtype = jax.dtypes.canonicalize_dtype(vectors.dtype)  # float32 unless x64 is on, as jnp.asarray
        padded = np.zeros((max(1, -(-rows // HOST_CHUNK)) * HOST_CHUNK, 3), dtype=dtype)
        padded[:, 2] = 1.0  # unit vectors in the padding rows: no 0/0 in the normalisation
        padded[:rows] = vectors
        chunks = [
            np.asarray(_host_harmonics(padded[start : start + HOST_CHUNK], lmax))
            for start in range(0, len(padded), HOST_CHUNK)
        ]
        return jnp.asarray(np.concatenate(chunks)[:rows])
    return _harmonics(vectors, lmax)


#: Rows of the host harmonics program (:func:`standard_harmonics`).
HOST_CHUNK = 1024


def _harmonics(vectors: np.ndarray | jnp.ndarray, lmax: int) -> jnp.ndarray:
    permuted = e3nn.IrrepsArray("1o", jnp.asarray(vectors)[..., list(STANDARD_TO_E3NN_AXES)])
    irreps = e3nn.Irreps.spherical_harmonics(lmax, p=-1)
    return e3nn.spherical_harmonics(irreps, permuted, normalize=True, normalization="component").array


_host_harmonics = jax.jit(_harmonics, static_argnums=1)


def gaussians(lengths: np.ndarray | jnp.ndarray, centres, widths, xp=jnp):
    """(E, K) Gaussians of (E,) lengths with per-edge (E, K) centres and (E,) widths (Angstrom)."""
    return xp.exp(-0.5 * ((lengths[:, None] - centres) / widths[:, None]) ** 2)


@functools.cache
def _components(shell_ls: tuple[int, ...], forbidden: bool = False) -> tuple[tuple[int, int, int, int], ...]:
    """(a, b, L, offset of L inside the pair's CG basis) of every fitted component: the L a function of
    the pair vector can carry (:func:`allowed_ls`), or with ``forbidden`` the others, parity (-1)^(L+1),
    which only pseudotensors of the environment (hamflow.train.environment_baseline) reach."""
    out = []
    for a, la in enumerate(shell_ls):
        for b, lb in enumerate(shell_ls):
            offset = 0
            for L in range(abs(la - lb), la + lb + 1):
                if (L in allowed_ls(la, lb)) != forbidden:
                    out.append((a, b, L, offset))
                offset += 2 * L + 1
    return tuple(out)


@functools.cache
def _scatter_plan(
    shell_ls: tuple[int, ...], forbidden: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(source, target, lcol): entry k of the flattened (C, M) harmonic coefficients goes to column
    target[k] of the block-head irreps vector (``output_irreps(shell_ls)``, B*B); M = 2 Lmax + 1;
    lcol (C,) the L of each component (of ``_components(shell_ls, forbidden)``)."""
    comps = _components(shell_ls, forbidden)
    lmax = max((L for _, _, L, _ in comps), default=0)
    width = 2 * lmax + 1
    pair_offsets = np.cumsum([0] + [(2 * la + 1) * (2 * lb + 1) for la in shell_ls for lb in shell_ls])
    source, target = [], []
    for c, (a, b, L, offset) in enumerate(comps):
        start = int(pair_offsets[a * len(shell_ls) + b]) + offset
        source.extend(c * width + m for m in range(2 * L + 1))
        target.extend(start + m for m in range(2 * L + 1))
    return (
        np.asarray(source, dtype=np.int32),
        np.asarray(target, dtype=np.int32),
        np.asarray([L for _, _, L, _ in comps], dtype=np.int32),
    )


def component_harmonics(vectors: jnp.ndarray, lcol: np.ndarray) -> jnp.ndarray:
    """(E, C, M) standard harmonics Y^L of (E, 3) vectors for each component's L (``lcol`` (C,)),
    zero-padded to M = 2 Lmax + 1."""
    lmax = int(lcol.max()) if lcol.size else 0
    sh = standard_harmonics(vectors, lmax)
    per_l = [
        jnp.pad(sh[:, L * L : L * L + 2 * L + 1], ((0, 0), (0, 2 * (lmax - L)))) for L in range(lmax + 1)
    ]
    return jnp.stack(per_l, axis=1)[:, lcol, :]


def components_to_blocks(
    values: jnp.ndarray, shell_ls: tuple[int, ...], forbidden: bool = False
) -> jnp.ndarray:
    """(E, B, B) blocks from (E, C, M) component irreps (``_components(shell_ls, forbidden)`` order,
    zero-padded)."""
    from hamflow.nn.block_head import assemble_blocks, output_irreps

    source, target, _ = _scatter_plan(shell_ls, forbidden)
    size = sum(2 * l + 1 for l in shell_ls)
    flat = values.reshape(values.shape[0], -1)[:, source]
    irreps = jnp.zeros((values.shape[0], size * size), jnp.float32).at[:, target].set(flat)
    return assemble_blocks(e3nn.IrrepsArray(output_irreps(shell_ls, parity=False), irreps), shell_ls)


def edge_geometry(edge_vec: jnp.ndarray, real: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(lengths (E,), safe vectors (E, 3)) of (E, 3) edge vectors in Angstrom, float32: edges not in
    ``real`` (E,) (on-site or padding, zero vectors) get the unit z vector, so their harmonics stay finite."""
    vec = jnp.asarray(edge_vec, dtype=jnp.float32)
    length = jnp.sqrt(jnp.maximum(jnp.sum(vec * vec, axis=-1), 1e-12))
    return length, jnp.where(real[:, None], vec, jnp.asarray([0.0, 0.0, 1.0], jnp.float32))


@dataclass(frozen=True)
class Baseline:
    """The fitted tables. weights: (S+1, S+1, C, K) (target units); centres: (S+1, S+1, K) and
    widths: (S+1, S+1) in Angstrom; C components of ``_components(shell_ls)``. Species rows as in
    the Normaliser (the last row: unseen species, all zero)."""

    weights: np.ndarray
    centres: np.ndarray
    widths: np.ndarray

    def blocks(
        self,
        shell_ls: Sequence[int],
        species_i: jnp.ndarray,
        species_j: jnp.ndarray,
        edge_vec: jnp.ndarray,
        offsite: jnp.ndarray,
    ) -> jnp.ndarray:
        """(E, B, B) baseline blocks (zero on on-site and padding edges); JAX, jittable, float32."""
        shell_ls = tuple(int(l) for l in shell_ls)
        _, _, lcol = _scatter_plan(shell_ls)
        length, safe = edge_geometry(edge_vec, offsite)
        harmonics = component_harmonics(safe, lcol)
        centres = jnp.asarray(self.centres)[species_i, species_j]
        widths = jnp.asarray(self.widths)[species_i, species_j]
        radial = gaussians(length, centres, widths)
        coefficient = jnp.einsum("eck,ek->ec", jnp.asarray(self.weights)[species_i, species_j], radial)
        coefficient = jnp.where(offsite[:, None], coefficient, 0.0)
        return components_to_blocks(coefficient[:, :, None] * harmonics, shell_ls)


#: RMS below which a whole baseline feature set counts as rounding noise (features are dimensionless
#: and O(1) by construction: Gaussians <= 1 times component-normalised harmonics).
FEATURE_FLOOR = 0.1


def ridge_weights(feats: np.ndarray, y: np.ndarray, relative_ridge: float) -> np.ndarray:
    """The ridge solution w of feats (n, F) w = y (n,); the ridge is ``relative_ridge`` times the mean
    diagonal of the normal equations, but at least ``relative_ridge`` n FEATURE_FLOOR^2.

    The floor matters when every feature is the rounding residue of a sum that cancels by symmetry
    (the pseudotensor term of a linear molecule: ~1e-7 in float32, not exactly 0 once XLA fuses the
    harmonics): a ridge relative to that noise alone gives weights ~1e10 eV, and a rotated copy of the
    molecule then gets tens of eV of non-equivariant baseline. At the floor such weights stay at the
    size of y, so the noise adds ~1e-6 of y; real O(1) features are shrunk by ~``relative_ridge``."""
    gram = feats.T @ feats
    mean_diagonal = float(np.trace(gram)) / feats.shape[1]
    ridge = relative_ridge * max(mean_diagonal, len(feats) * FEATURE_FLOOR**2, 1e-30)
    return np.linalg.solve(gram + ridge * np.eye(feats.shape[1]), feats.T @ y)


def validated_ridge(
    feats: np.ndarray, y: np.ndarray, groups: np.ndarray, relative_ridge: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(y, w, feats @ w): the ridge fit of y (n,) on feats (n, F), kept only if it generalises.

    ``groups`` (n,) is the training graph of each row. Two-fold cross-validation by graph (even and
    odd graph numbers): each half is predicted by the fit on the other; unless the held-out squared
    residual is below the held-out sum of y^2 (the term helps structures it was not fitted on), w is
    zero. A term that cannot be validated (all rows from one graph) is not used either. Without this
    a fit on few or nearly degenerate environments can add eV to unseen structures (the environment
    pseudotensor term on linear molecules beside a C3v one: 45 eV RMS; the two-centre fit on four
    water molecules: 13 eV RMS, more than H itself). Used by every baseline fit.
    """
    folds = np.asarray(groups) % 2
    if folds.min() == folds.max():
        return y, np.zeros(feats.shape[1]), np.zeros_like(y)
    residual = plain = 0.0
    for held_out in (0, 1):
        test = folds == held_out
        w_half = ridge_weights(feats[~test], y[~test], relative_ridge)
        residual += float(np.sum((y[test] - feats[test] @ w_half) ** 2))
        plain += float(np.sum(y[test] ** 2))
    if not residual < plain:
        return y, np.zeros(feats.shape[1]), np.zeros_like(y)
    w = ridge_weights(feats, y, relative_ridge)
    return y, w, feats @ w


class BaselineFit:
    """Streaming least squares for the baseline: add off-site edges graph by graph, then solve."""

    def __init__(self, shell_ls: Sequence[int]) -> None:
        self.shell_ls = tuple(shell_ls)
        self.components = _components(self.shell_ls)
        self.starts = shell_starts(self.shell_ls)
        self.counts: dict[tuple[int, int], int] = {}
        self.edges: dict[tuple[int, int], list[tuple[np.ndarray, ...]]] = {}

    def add(
        self, si: np.ndarray, sj: np.ndarray, vec: np.ndarray, blocks: np.ndarray, masks: np.ndarray
    ) -> None:
        """Off-site edges of one graph: species rows (E,), vectors (E, 3) Angstrom, real blocks and
        their masks (E, B, B). Keeps per species pair (up to MAX_EDGES_PER_PAIR edges) the lengths,
        the projections t = <x^L, Y^L> / (2L+1) of each component, whether its block is complete, and
        each shell-pair block's squared norm."""
        if len(vec) == 0:
            return
        lmax = max((L for _, _, L, _ in self.components), default=0)
        sh = np.asarray(standard_harmonics(vec, lmax), dtype=np.float64)
        lengths = np.linalg.norm(vec, axis=1)
        t = np.zeros((len(vec), len(self.components)))
        full = np.zeros_like(t, dtype=bool)
        s = self.starts
        nshell = len(self.shell_ls)
        energy = np.zeros((len(vec), nshell, nshell))
        for a in range(nshell):
            for b in range(nshell):
                sub = np.where(
                    masks[:, s[a] : s[a + 1], s[b] : s[b + 1]], blocks[:, s[a] : s[a + 1], s[b] : s[b + 1]], 0
                )
                energy[:, a, b] = np.sum(sub * sub, axis=(1, 2))
        for c, (a, b, L, offset) in enumerate(self.components):
            rows, cols = slice(s[a], s[a + 1]), slice(s[b], s[b + 1])
            cg = _cg_basis(self.shell_ls[a], self.shell_ls[b])[offset : offset + 2 * L + 1]
            x = np.einsum("eij,kij->ek", blocks[:, rows, cols], cg)
            t[:, c] = np.sum(x * sh[:, L * L : L * L + 2 * L + 1], axis=1) / (2 * L + 1)
            full[:, c] = masks[:, rows, cols].all(axis=(1, 2))
        for pair in set(zip(si.tolist(), sj.tolist(), strict=True)):
            kept = self.counts.get(pair, 0)
            if kept >= MAX_EDGES_PER_PAIR:
                continue
            sel = np.nonzero((si == pair[0]) & (sj == pair[1]))[0][: MAX_EDGES_PER_PAIR - kept]
            self.counts[pair] = kept + len(sel)
            self.edges.setdefault(pair, []).append((lengths[sel], t[sel], full[sel], energy[sel]))

    def solve(self, num_species: int) -> tuple[Baseline, np.ndarray]:
        """(Baseline, explained) where explained (S+1, S+1, nshell, nshell) in [0, 1] is the fraction
        of each shell-pair block's mean square that the baseline removes on the fitted edges."""
        nshell = len(self.shell_ls)
        n_comp = len(self.components)
        weights = np.zeros((num_species + 1, num_species + 1, n_comp, NUM_RADIAL))
        centres = np.zeros((num_species + 1, num_species + 1, NUM_RADIAL))
        widths = np.ones((num_species + 1, num_species + 1))
        explained = np.zeros((num_species + 1, num_species + 1, nshell, nshell))
        for (si, sj), chunks in self.edges.items():
            lengths = np.concatenate([c[0] for c in chunks])
            graph = np.concatenate([np.full(len(c[0]), k) for k, c in enumerate(chunks)])  # one chunk a graph
            t = np.concatenate([c[1] for c in chunks])
            full = np.concatenate([c[2] for c in chunks])
            energy = np.concatenate([c[3] for c in chunks]).sum(axis=0)
            removed = np.zeros((nshell, nshell))
            lo, hi = float(lengths.min()), float(lengths.max())
            spacing = max((hi - lo) / (NUM_RADIAL - 3), 0.05)
            mu = np.linspace(lo - spacing, hi + spacing, NUM_RADIAL)
            width = float(mu[1] - mu[0])
            phi = gaussians(
                lengths, np.broadcast_to(mu, (len(lengths), NUM_RADIAL)), np.full(len(lengths), width), np
            )
            centres[si, sj], widths[si, sj] = mu, width
            for c, (a, b, L, _) in enumerate(self.components):
                keep = full[:, c]
                if keep.sum() < NUM_RADIAL:
                    continue
                y, w, fitted = validated_ridge(phi[keep], t[keep, c], graph[keep], RIDGE)
                weights[si, sj, c] = w
                # |x - c Y|^2 = |x|^2 - (2L+1) (2 t c - c^2): the part of |x|^2 the baseline removes
                removed[a, b] += float(np.sum((2 * L + 1) * (2 * y * fitted - fitted**2)))
            explained[si, sj] = np.clip(removed / np.maximum(energy, 1e-300), 0.0, 1.0)
        return Baseline(
            weights.astype(np.float32), centres.astype(np.float32), widths.astype(np.float32)
        ), explained
