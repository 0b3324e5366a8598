"""Target normalisation that keeps the prediction exactly equivariant.

All-electron Hamiltonians mix ~500 eV core on-site entries with meV off-site ones (see
../shared/notes/real-dft-data.md); a network learns them far better on a common scale. hamflow fits,
on the training structures, for each species (pair) and each shell pair (a, b) of the common basis:

- a scale: the RMS of that shell-pair block's entries (eV for H), separately for on-site blocks
  (per species) and off-site blocks (per ordered species pair);
- an on-site offset: the mean of the block's L = 0 part, ``tr(block)/(2l+1)`` times the identity,
  for shell pairs with l_a == l_b.

- an off-site two-centre baseline (hamflow.train.baseline): per species pair, shell pair and L, a
  radial function times the spherical harmonic of the pair direction, fitted by least squares; the
  off-site scale is then the RMS of what the baseline leaves. For spinful targets every baseline is
  fitted to the spin-free part H0 = Re(uu + dd) / 2 and added as kron(1, baseline) (uu and dd).

The network predicts ``y_hat``; the physical prediction is ``y_hat * scale + offset + baseline``. A
scalar per shell-pair block and a multiple of the identity both commute with the Wigner-D rotation
of the block, and the baseline is itself equivariant, so equivariance is untouched. The tables are
stored with every checkpoint (``normaliser.npz``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax.numpy as jnp
import numpy as np

from hamflow.atomic import atomic_path
from hamflow.train.baseline import Baseline, BaselineFit
from hamflow.train.environment_baseline import EnvironmentBaseline, EnvironmentBaselineFit
from hamflow.train.onsite_baseline import OnsiteBaseline, OnsiteBaselineFit

if TYPE_CHECKING:
    from hamflow.graph.batch import GraphBatch

MAX_Z = 119
# The smallest normalised scale of a block a baseline explains, as a fraction of its scale without
# the baseline: it bounds the weight the normalised loss gives to a nearly fully explained block.
# 0.05 against 1e-4: 4.32 -> 2.92 meV on MD17-class water in 10 min (benchmarks/RESULTS.md, row G).
REMAINDER_FLOOR = 0.05


@dataclass(frozen=True)
class Normaliser:
    """Per-entry scale and offset tables in the common basis.

    species_of_z: (119,) int32, species row of each atomic number (the last row = unseen species).
    onsite_scale: (S+1, B, B); offsite_scale: (S+1, S+1, B, B); onsite_offset: (S+1, B, B).
    Units: those of the target (eV for H, electrons for Rho). For spinful data the tables are for
    each spin sub-block alike.
    """

    species_of_z: np.ndarray
    onsite_scale: np.ndarray
    offsite_scale: np.ndarray
    onsite_offset: np.ndarray
    shell_ls: tuple[int, ...] | None = None
    baseline: Baseline | None = None
    onsite_baseline: OnsiteBaseline | None = None
    environment_baseline: EnvironmentBaseline | None = None

    @property
    def basis_size(self) -> int:
        return int(self.onsite_scale.shape[-1])

    def save(self, path: str | Path) -> None:
        """Write the tables to an ``.npz`` file atomically."""
        with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as handle:
            extra = {}
            if self.baseline is not None and self.shell_ls is not None:
                extra = {
                    "shell_ls": np.asarray(self.shell_ls, dtype=np.int64),
                    "baseline_weights": self.baseline.weights,
                    "baseline_centres": self.baseline.centres,
                    "baseline_widths": self.baseline.widths,
                }
            if self.onsite_baseline is not None and self.shell_ls is not None:
                extra.update(
                    shell_ls=np.asarray(self.shell_ls, dtype=np.int64),
                    onsite_baseline_weights=self.onsite_baseline.weights,
                    onsite_baseline_intercept=self.onsite_baseline.intercept,
                    onsite_baseline_centres=self.onsite_baseline.centres,
                    onsite_baseline_widths=self.onsite_baseline.widths,
                )
            if self.environment_baseline is not None and self.shell_ls is not None:
                extra.update(
                    shell_ls=np.asarray(self.shell_ls, dtype=np.int64),
                    environment_baseline_weights=self.environment_baseline.weights,
                    environment_baseline_centres=self.environment_baseline.centres,
                    environment_baseline_widths=self.environment_baseline.widths,
                )
                if self.environment_baseline.pseudo_weights is not None:
                    extra["environment_baseline_pseudo_weights"] = self.environment_baseline.pseudo_weights
            np.savez(
                handle,
                species_of_z=self.species_of_z,
                onsite_scale=self.onsite_scale,
                offsite_scale=self.offsite_scale,
                onsite_offset=self.onsite_offset,
                **extra,
            )

    @classmethod
    def load(cls, path: str | Path) -> Normaliser:
        """Read ``normaliser.npz`` (files written before the baselines existed load without them)."""
        with np.load(path) as data:
            tables = {name: np.asarray(data[name]) for name in data.files}
        baseline = onsite = environment = None
        shell_ls = tuple(int(l) for l in tables.pop("shell_ls")) if "shell_ls" in tables else None
        if "baseline_weights" in tables:
            baseline = Baseline(
                tables.pop("baseline_weights"), tables.pop("baseline_centres"), tables.pop("baseline_widths")
            )
        if "onsite_baseline_weights" in tables:
            onsite = OnsiteBaseline(
                tables.pop("onsite_baseline_weights"),
                tables.pop("onsite_baseline_intercept"),
                tables.pop("onsite_baseline_centres"),
                tables.pop("onsite_baseline_widths"),
            )
        if "environment_baseline_weights" in tables:
            environment = EnvironmentBaseline(
                tables.pop("environment_baseline_weights"),
                tables.pop("environment_baseline_centres"),
                tables.pop("environment_baseline_widths"),
                tables.pop("environment_baseline_pseudo_weights", None),
            )
        return cls(
            **tables,
            shell_ls=shell_ls,
            baseline=baseline,
            onsite_baseline=onsite,
            environment_baseline=environment,
        )

    def edge_baseline(
        self,
        atomic_numbers: jnp.ndarray,
        edge_src: jnp.ndarray,
        edge_dst: jnp.ndarray,
        offsite: jnp.ndarray,
        edge_vec: jnp.ndarray,
        onsite: jnp.ndarray | None = None,
        node_terms: tuple[jnp.ndarray | None, jnp.ndarray | None] | None = None,
    ) -> jnp.ndarray | None:
        """(E, B, B) baselines: the two-centre one and the environment one on the ``offsite`` (E,)
        edges (real, not on-site) and the neighbour-sum one on the ``onsite`` (E,) edges (real on-site
        edges; omitted: none), or None when this normaliser has none. ``node_terms``: the
        :meth:`baseline_node_terms` of the whole graph when these edges are a slice of it (the
        neighbour sums then cover all edges). JAX, jittable; target units."""
        if self.shell_ls is None or (self.baseline is None and self.onsite_baseline is None):
            return None
        species_of_z = jnp.asarray(self.species_of_z)
        si = species_of_z[atomic_numbers[edge_src]]
        sj = species_of_z[atomic_numbers[edge_dst]]
        sums, density = node_terms if node_terms is not None else (None, None)
        total = None
        if self.baseline is not None:
            total = self.baseline.blocks(self.shell_ls, si, sj, edge_vec, offsite)
        if self.onsite_baseline is not None and onsite is not None:
            on = self.onsite_baseline.blocks(
                self.shell_ls, si, sj, edge_src, edge_vec, offsite, onsite, int(atomic_numbers.shape[0]), sums
            )
            total = on if total is None else total + on
        if self.environment_baseline is not None:
            env = self.environment_baseline.blocks(
                self.shell_ls,
                si,
                sj,
                edge_src,
                edge_dst,
                edge_vec,
                offsite,
                int(atomic_numbers.shape[0]),
                density,
            )
            total = env if total is None else total + env
        return total

    def baseline_node_terms(
        self,
        atomic_numbers: jnp.ndarray,
        edge_src: jnp.ndarray,
        edge_dst: jnp.ndarray,
        offsite: jnp.ndarray,
        edge_vec: jnp.ndarray,
    ) -> tuple[jnp.ndarray | None, jnp.ndarray | None]:
        """The per-atom neighbour sums of the on-site and environment baselines (each None when this
        normaliser lacks it) over these edges (``offsite``: the real off-site ones); additive over any
        split of a graph's edges, so a caller feeding the edges in chunks sums them and passes the
        total to :meth:`physical` as ``node_terms``. JAX, jittable."""
        if self.shell_ls is None or (self.baseline is None and self.onsite_baseline is None):
            return None, None
        species_of_z = jnp.asarray(self.species_of_z)
        si = species_of_z[atomic_numbers[edge_src]]
        sj = species_of_z[atomic_numbers[edge_dst]]
        num_nodes = int(atomic_numbers.shape[0])
        sums = density = None
        if self.onsite_baseline is not None:
            sums = self.onsite_baseline.node_sums(
                self.shell_ls, si, sj, edge_src, edge_vec, offsite, num_nodes
            )
        if self.environment_baseline is not None:
            density = self.environment_baseline.node_density(
                self.shell_ls, si, sj, edge_src, edge_vec, offsite, num_nodes
            )
        return sums, density

    def physical(
        self,
        raw: jnp.ndarray,
        batch: GraphBatch,
        *,
        spinful: bool,
        dtype: Any,
        node_terms: tuple[jnp.ndarray | None, jnp.ndarray | None] | None = None,
    ) -> tuple[jnp.ndarray, jnp.ndarray]:
        """(prediction, scale): the network's normalised output ``raw`` (E, b, b) of one unstacked
        GraphBatch as physical blocks ``raw * scale + offset + baselines`` in ``dtype`` (target units,
        eV for H), and the (E, b, b) scale used. ``node_terms``: see :meth:`edge_baseline` (for a
        batch whose edges are a slice of its graph's). JAX, jittable."""
        scale, offset = self.edge_tables(
            batch.atomic_numbers, batch.edge_src, batch.edge_dst, batch.edge_onsite, spinful=spinful
        )
        prediction = raw.astype(dtype) * scale + offset
        baseline = self.edge_baseline(
            batch.atomic_numbers,
            batch.edge_src,
            batch.edge_dst,
            jnp.logical_and(batch.edge_mask, jnp.logical_not(batch.edge_onsite)),
            batch.edge_vec,
            onsite=jnp.logical_and(batch.edge_mask, batch.edge_onsite),
            node_terms=node_terms,
        )
        if baseline is not None:
            if spinful:  # the baselines model the spin-free part H0: kron(1, b) on uu and dd
                zero = jnp.zeros_like(baseline)
                baseline = jnp.concatenate(
                    [jnp.concatenate([baseline, zero], axis=2), jnp.concatenate([zero, baseline], axis=2)],
                    axis=1,
                )
            prediction = prediction + baseline.astype(prediction.dtype)
        return prediction, scale

    def edge_tables(
        self,
        atomic_numbers: jnp.ndarray,
        edge_src: jnp.ndarray,
        edge_dst: jnp.ndarray,
        onsite: jnp.ndarray,
        *,
        spinful: bool = False,
    ) -> tuple[jnp.ndarray, jnp.ndarray]:
        """(scale, offset) for each edge, each (E, B, B), or (E, 2B, 2B) for spinful targets (the
        scale repeated over the four spin sub-blocks, the offset on the uu and dd sub-blocks).
        JAX, jittable."""
        species_of_z = jnp.asarray(self.species_of_z)
        si = species_of_z[atomic_numbers[edge_src]]
        sj = species_of_z[atomic_numbers[edge_dst]]
        onsite_b = onsite[:, None, None]
        scale = jnp.where(
            onsite_b, jnp.asarray(self.onsite_scale)[si], jnp.asarray(self.offsite_scale)[si, sj]
        )
        offset = jnp.where(onsite_b, jnp.asarray(self.onsite_offset)[si], 0.0)
        if spinful:
            zero = jnp.zeros_like(offset)
            scale = jnp.tile(scale, (1, 2, 2))
            offset = jnp.concatenate(
                [jnp.concatenate([offset, zero], axis=2), jnp.concatenate([zero, offset], axis=2)], axis=1
            )
        return scale, offset


def _shell_blocks(shell_ls: tuple[int, ...]) -> list[tuple[int, int, slice, slice]]:
    starts = np.concatenate([[0], np.cumsum([2 * l + 1 for l in shell_ls])])
    out = []
    for a, la in enumerate(shell_ls):
        for b, lb in enumerate(shell_ls):
            out.append((la, lb, slice(starts[a], starts[a + 1]), slice(starts[b], starts[b + 1])))
    return out


def _spinless_view(labels: np.ndarray, mask: np.ndarray, basis_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Fold (E, 2B, 2B) spinful blocks into (4E, B, B) spin sub-blocks; spinless input unchanged."""
    if labels.shape[-1] == basis_size:
        return labels, mask
    e = labels.shape[0]
    view = labels.reshape(e, 2, basis_size, 2, basis_size).transpose(0, 1, 3, 2, 4)
    mview = mask.reshape(e, 2, basis_size, 2, basis_size).transpose(0, 1, 3, 2, 4)
    return view.reshape(4 * e, basis_size, basis_size), mview.reshape(4 * e, basis_size, basis_size)


def fit_normaliser(
    graphs: Iterable, shell_ls: tuple[int, ...], *, max_structures: int = 500, baseline: bool = True
) -> Normaliser:
    """Fit the tables on training graphs (objects with ``atomic_numbers``, ``edge_src``,
    ``edge_dst``, ``edge_shift``, ``labels`` (E, B, B) and ``label_mask``).

    Streams over the graphs once, keeping per (species pair, shell pair) sums only, so it works on
    disk stores larger than memory; statistics settle long before the whole of a large training set,
    so only the first ``max_structures`` graphs (in the given, seeded-shuffled order) are read.
    ``baseline``: also fit the off-site two-centre baseline (spinless targets only; graphs need
    ``edge_vec``), the off-site scales then being those of the remainder.
    """
    basis_size = sum(2 * l + 1 for l in shell_ls)
    blocks = _shell_blocks(tuple(shell_ls))
    nshell = len(shell_ls)
    z_index: dict[int, int] = {}
    # accumulators keyed by species (pair): arrays over shell pairs (nshell, nshell)
    on_sq: dict[int, np.ndarray] = {}
    on_n: dict[int, np.ndarray] = {}
    on_tr: dict[int, np.ndarray] = {}
    on_trn: dict[int, np.ndarray] = {}
    off_sq: dict[tuple[int, int], np.ndarray] = {}
    off_n: dict[tuple[int, int], np.ndarray] = {}

    def zeros() -> np.ndarray:
        return np.zeros((nshell, nshell))

    fit = BaselineFit(shell_ls) if baseline else None
    onsite_fit = OnsiteBaselineFit(shell_ls) if baseline else None
    environment_fit = EnvironmentBaselineFit(shell_ls) if baseline else None

    for count, graph in enumerate(graphs):
        if count >= max_structures:
            break
        if graph.labels is None:
            continue
        z = np.asarray(graph.atomic_numbers)
        for zz in np.unique(z):
            z_index.setdefault(int(zz), len(z_index))
        onsite = (np.asarray(graph.edge_src) == np.asarray(graph.edge_dst)) & np.all(
            np.asarray(graph.edge_shift) == 0, axis=1
        )
        labels = np.asarray(graph.labels)
        mask = np.asarray(graph.label_mask)
        spin_fold = 1 if labels.shape[-1] == basis_size else 4
        lab, msk = _spinless_view(labels, mask, basis_size)
        if spin_fold == 4:  # the baselines fit the spin-free part H0 = Re(uu + dd) / 2 (docs/model.md)
            labels = np.real(labels[:, :basis_size, :basis_size] + labels[:, basis_size:, basis_size:]) / 2
            mask = mask[:, :basis_size, :basis_size] & mask[:, basis_size:, basis_size:]
        if fit is not None and not np.iscomplexobj(labels) and hasattr(graph, "edge_vec"):
            off = ~onsite
            rows = np.asarray([z_index[int(v)] for v in z], dtype=np.int64)
            fit.add(
                rows[np.asarray(graph.edge_src)[off]],
                rows[np.asarray(graph.edge_dst)[off]],
                np.asarray(graph.edge_vec, dtype=np.float64)[off],
                labels[off].astype(np.float64),
                mask[off],
            )
            src_all, dst_all = np.asarray(graph.edge_src), np.asarray(graph.edge_dst)
            onsite_fit.add(
                rows,
                src_all[onsite],
                labels[onsite].astype(np.float64),
                mask[onsite],
                src_all[off],
                dst_all[off],
                np.asarray(graph.edge_vec, dtype=np.float64)[off],
            )
            environment_fit.add(
                rows,
                src_all[off],
                dst_all[off],
                np.asarray(graph.edge_vec, dtype=np.float64)[off],
                labels[off].astype(np.float64),
                mask[off],
            )
        elif fit is not None:
            fit = onsite_fit = environment_fit = (
                None  # complex spinless targets (or no edge vectors): no baselines
            )
        src = np.repeat(np.asarray(graph.edge_src), spin_fold)
        dst = np.repeat(np.asarray(graph.edge_dst), spin_fold)
        ons = np.repeat(onsite, spin_fold)
        for e in range(lab.shape[0]):
            si, sj = z_index[int(z[src[e]])], z_index[int(z[dst[e]])]
            block, bmask = lab[e], msk[e]
            if ons[e]:
                acc_sq = on_sq.setdefault(si, zeros())
                acc_n = on_n.setdefault(si, zeros())
                acc_tr = on_tr.setdefault(si, zeros())
                acc_trn = on_trn.setdefault(si, zeros())
            else:
                acc_sq = off_sq.setdefault((si, sj), zeros())
                acc_n = off_n.setdefault((si, sj), zeros())
            for k, (la, lb, rows, cols) in enumerate(blocks):
                a, b = divmod(k, nshell)
                sub_mask = bmask[rows, cols]
                if not sub_mask.any():
                    continue
                sub = block[rows, cols]
                if ons[e] and la == lb and sub_mask.all():
                    mean_l0 = float(np.real(np.trace(sub))) / (2 * la + 1)
                    acc_tr[a, b] += mean_l0
                    acc_trn[a, b] += 1
                acc_sq[a, b] += float(np.sum(np.abs(sub[sub_mask]) ** 2))
                acc_n[a, b] += float(sub_mask.sum())

    nspec = len(z_index)
    species_of_z = np.full(MAX_Z, nspec, dtype=np.int32)
    for zz, idx in z_index.items():
        species_of_z[zz] = idx

    def finish(sq: np.ndarray, n: np.ndarray, fallback: float) -> np.ndarray:
        rms = np.sqrt(sq / np.maximum(n, 1))
        return np.where((n > 0) & (rms > 0), rms, fallback)

    all_off_sq = sum(off_sq.values(), zeros())
    all_off_n = sum(off_n.values(), zeros())
    total_off = float(all_off_sq.sum()) / max(float(all_off_n.sum()), 1.0)
    global_off = float(np.sqrt(total_off)) if total_off > 0 else 1.0

    onsite_scale_sh = np.full((nspec + 1, nshell, nshell), global_off)
    onsite_offset_sh = np.zeros((nspec + 1, nshell, nshell))
    offsite_scale_sh = np.full((nspec + 1, nspec + 1, nshell, nshell), global_off)
    fitted, explained = fit.solve(nspec) if fit is not None else (None, None)
    onsite_fitted, onsite_explained = onsite_fit.solve(nspec) if onsite_fit is not None else (None, None)
    environment_fitted = environment_explained = None
    if environment_fit is not None and fitted is not None and onsite_fitted is not None:
        environment_fitted, environment_explained = environment_fit.solve(
            nspec, fitted, onsite_fitted.centres, onsite_fitted.widths
        )
    for si in range(nspec):
        if si in on_sq:
            mean_l0 = on_tr[si] / np.maximum(on_trn[si], 1)
            # the RMS of what remains once the offset is removed sets the scale
            l_dims = np.array([[2 * la + 1 if la == lb else 0 for lb in shell_ls] for la in shell_ls])
            resid_sq = on_sq[si] - mean_l0**2 * l_dims * on_trn[si]
            plain_on = finish(np.maximum(resid_sq, 0.0), on_n[si], global_off)
            if onsite_explained is None:
                onsite_offset_sh[si] = mean_l0
                onsite_scale_sh[si] = plain_on
            else:
                # the baseline holds the constant: no offset; the scale is the RMS of what it
                # leaves, never below REMAINDER_FLOOR of the offset-removed block's RMS
                left = on_sq[si] * (1.0 - onsite_explained[si])
                rms = np.sqrt(left / np.maximum(on_n[si], 1))
                onsite_scale_sh[si] = np.where(
                    on_n[si] > 0, np.maximum(rms, REMAINDER_FLOOR * plain_on), plain_on
                )
        for sj in range(nspec):
            if (si, sj) in off_sq:
                plain = finish(off_sq[(si, sj)], off_n[(si, sj)], global_off)
                if explained is None:
                    offsite_scale_sh[si, sj] = plain
                else:
                    # the RMS of what the baseline leaves, never below REMAINDER_FLOOR of the block's own RMS
                    left = off_sq[(si, sj)] * (1.0 - explained[si, sj])
                    if environment_explained is not None:
                        left = left * (1.0 - environment_explained[si, sj])
                    rms = np.sqrt(left / np.maximum(off_n[(si, sj)], 1))
                    offsite_scale_sh[si, sj] = np.where(
                        off_n[(si, sj)] > 0, np.maximum(rms, REMAINDER_FLOOR * plain), plain
                    )

    def expand(table: np.ndarray, *, identity: bool) -> np.ndarray:
        out = np.zeros((*table.shape[:-2], basis_size, basis_size))
        for k, (la, lb, rows, cols) in enumerate(blocks):
            a, b = divmod(k, nshell)
            value = table[..., a, b][..., None, None]
            if identity:
                if la == lb:
                    out[..., rows, cols] = value * np.eye(2 * la + 1)
            else:
                out[..., rows, cols] = value
        return out

    return Normaliser(
        species_of_z=species_of_z,
        onsite_scale=expand(onsite_scale_sh, identity=False).astype(np.float32),
        offsite_scale=expand(offsite_scale_sh, identity=False).astype(np.float32),
        onsite_offset=expand(onsite_offset_sh, identity=True).astype(np.float32),
        shell_ls=tuple(int(l) for l in shell_ls) if fitted is not None or onsite_fitted is not None else None,
        baseline=fitted,
        onsite_baseline=onsite_fitted,
        environment_baseline=environment_fitted,
    )
