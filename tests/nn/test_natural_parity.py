"""DeepH-pack's natural-parity sparrow irreps (channel l of parity (-1)^l, consider_parity = true).

The features carry only 0e, 1o, 2e, 3o, 4e; the blocks also need 1e (p-p), 2o (p-d) and 3e (d-d), which
the readout builds from products with the features' 1o. Checked: the parameter counts of docs/model.md,
the unnatural block irreps are really produced (non-zero), and the predictions rotate with the Wigner D
matrices under rotations and rotation + inversion, on the demo molecules (basis s3p2d1), DeepH-dock's
molecules (s2p2d1) and its periodic MoTe2 crystal (s3p2d2, R != 0 edges).
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from nn_batches import equivariance_error, molecule_batch, random_rotation

from hamflow.data.orbitals import atomic_number
from hamflow.data.poscar import read_poscar
from hamflow.data.structure import load_structure
from hamflow.graph.basis import CommonBasis, parse_orbital_types
from hamflow.graph.collate import collate
from hamflow.graph.structure_graph import build_structure_graph
from hamflow.nn.block_head import block_to_irreps
from hamflow.nn.model import build_model, count_parameters, init_params
from hamflow.nn.wigner import basis_rotation

NATURAL = "64x0e+32x1o+16x2e+8x3o+8x4e"  # deeph-pack-train-toml.md's sparrow example
SMALL_NATURAL = "8x0e+4x1o+4x2e+2x3o+2x4e"


def shapes_count(shells: tuple[int, ...], irreps: str, num_blocks: int) -> int:
    model = build_model(
        "sparrow",
        shells,
        net_irreps=irreps,
        num_blocks=num_blocks,
        rmax=7.5,
        consider_parity=True,
    )
    positions = np.array([[0.0, 0.0, 0.0], [0.96, 0.1, 0.0], [-0.3, 0.9, 0.1]])
    batch = molecule_batch(positions, (8, 1, 1), sum(2 * l + 1 for l in shells))
    return count_parameters(jax.eval_shape(model.init, jax.random.PRNGKey(0), batch))


@pytest.mark.parametrize(
    ("basis", "irreps", "num_blocks", "expected"),
    [
        ("s3p2d2", NATURAL, 3, 524_112),  # docs/model.md's table
        ("s3p2d1", "16x0e+8x1o+8x2e+4x3o+4x4e", 2, None),  # the demo-basis irreps
    ],
)
def test_parameter_counts(basis, irreps, num_blocks, expected):
    count = shapes_count(parse_orbital_types(basis).shell_ls, irreps, num_blocks)
    print(f"sparrow {basis} {irreps}, {num_blocks} blocks: {count:,} parameters")
    if expected is not None:
        assert count == expected
    assert 1e4 < count < 1e6


def demo_molecule(demo_dir, name: str):
    poscar = read_poscar(demo_dir / "molecules" / "dft" / name / "000" / "POSCAR")
    return poscar.positions, [atomic_number(e) for e in poscar.elements]


def dock_molecule(deeph_dock, sid: str):
    poscar = read_poscar(deeph_dock / "molecules" / "dft" / sid / "POSCAR")
    return poscar.positions, [atomic_number(e) for e in poscar.elements]


def check_molecule(shells, positions, numbers, label: str) -> None:
    size = sum(2 * l + 1 for l in shells)
    model = build_model(
        "sparrow",
        shells,
        net_irreps=SMALL_NATURAL,
        num_blocks=2,
        rmax=5.0,
        consider_parity=True,
    )
    batch = molecule_batch(positions, numbers, size)
    params = init_params(model, batch, seed=1)
    apply = jax.jit(model.apply)
    blocks = np.asarray(apply(params, batch))
    assert np.isfinite(blocks).all()
    assert_unnatural_parities_present(blocks, batch, shells)
    for seed, improper in ((11, False), (12, True)):
        rotation = random_rotation(seed, improper=improper)
        rotated = np.asarray(apply(params, molecule_batch(positions @ rotation.T, numbers, size)))
        error, scale = equivariance_error(blocks, rotated, basis_rotation(shells, rotation), batch.edge_mask)
        kind = "rotation + inversion" if improper else "rotation"
        print(f"sparrow natural parity, {label}, {kind}: max error {error:.1e}, max |H| {scale:.2f}")
        assert error < 2e-5 * max(scale, 1.0)


def assert_unnatural_parities_present(blocks: np.ndarray, batch, shells) -> None:
    """The p-p blocks' 1e part (antisymmetric) of off-site edges is not zero: the readout builds it."""
    p = shells.index(1)
    start = sum(2 * l + 1 for l in shells[:p])
    offsite = np.asarray(batch.edge_mask) & ~np.asarray(batch.edge_onsite)
    pp = blocks[offsite][:, start : start + 3, start : start + 3]
    parts = np.asarray(block_to_irreps(pp.astype(np.float64), 1, 1).array)  # 0e (1), 1e (3), 2e (5)
    pseudovector = np.abs(parts[:, 1:4]).max()
    print(f"p-p blocks: max |1e part| {pseudovector:.2e}, max |block| {np.abs(pp).max():.2e}")
    assert pseudovector > 1e-3 * np.abs(pp).max()


@pytest.mark.parametrize("name", ["ethanol", "nh3"])
def test_equivariant_on_the_demo_molecules(demo_dir, name):
    positions, numbers = demo_molecule(demo_dir, name)
    check_molecule(parse_orbital_types("s3p2d1").shell_ls, positions, numbers, f"demo {name}")


@pytest.mark.parametrize("sid", ["1000", "25000"])
def test_equivariant_on_the_deeph_dock_molecules(deeph_dock, sid):
    positions, numbers = dock_molecule(deeph_dock, sid)
    check_molecule(parse_orbital_types("s2p2d1").shell_ls, positions, numbers, f"DeepH-dock molecule {sid}")


def test_equivariant_on_the_deeph_dock_crystal(deeph_dock):
    """MoTe2: a periodic graph (R != 0 edges); rotating the crystal rotates every edge vector."""
    basis = CommonBasis((0, 0, 0, 1, 1, 2, 2))
    structure = load_structure(deeph_dock / "periodic" / "dft" / "MoTe2", quantities=("H", "S"))
    graph = build_structure_graph(structure, basis, graph_type="H")
    assert graph.edge_shift.any()
    batch = collate([graph], num_nodes=graph.num_nodes + 1, num_edges=graph.num_edges + 2, num_graphs=1)
    model = build_model(
        "sparrow",
        basis.shell_ls,
        net_irreps=SMALL_NATURAL,
        num_blocks=1,
        rmax=7.5,
        consider_parity=True,
    )
    params = init_params(model, batch, seed=2)
    apply = jax.jit(model.apply)
    blocks = np.asarray(apply(params, batch))
    assert np.isfinite(blocks).all()
    for seed, improper in ((21, False), (22, True)):
        rotation = random_rotation(seed, improper=improper)
        vectors = (np.asarray(batch.edge_vec, np.float64) @ rotation.T).astype(np.float32)
        rotated = np.asarray(apply(params, batch._replace(edge_vec=vectors)))
        error, scale = equivariance_error(
            blocks, rotated, basis_rotation(basis.shell_ls, rotation), np.asarray(batch.edge_mask)
        )
        kind = "rotation + inversion" if improper else "rotation"
        print(
            f"sparrow natural parity, MoTe2 ({graph.num_edges} edges), {kind}: "
            f"error {error:.1e}, |H| {scale:.2f}"
        )
        assert error < 2e-5 * max(scale, 1.0)
