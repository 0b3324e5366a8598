"""hamflow's POSCAR reader against ASE's (``ase.io.read(format="vasp")``) on real files.

The files are DeepH-dock's example structures in ``../shared/data/deeph-dock`` (molecules, water, the
periodic MoTe2 crystal, rotated copies); the test skips, saying so, where that folder is absent. ASE
is one of hamflow's dependencies (periodic neighbour lists), so it is always installed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hamflow.data.poscar import read_poscar


def _poscars(root: Path) -> list[Path]:
    return sorted(root.rglob("POSCAR"))


def test_poscar_reader_equals_ase_on_deeph_dock_files(deeph_dock: Path) -> None:
    import ase.io

    files = _poscars(deeph_dock)
    assert len(files) >= 10, f"expected DeepH-dock's example POSCARs under {deeph_dock}"
    for path in files:
        ours = read_poscar(path)
        atoms = ase.io.read(path, format="vasp")
        where = str(path.relative_to(deeph_dock))
        assert list(ours.elements) == atoms.get_chemical_symbols(), where
        np.testing.assert_allclose(ours.lattice, np.asarray(atoms.cell), rtol=0, atol=1e-12, err_msg=where)
        np.testing.assert_allclose(ours.positions, atoms.positions, rtol=0, atol=1e-10, err_msg=where)
        np.testing.assert_allclose(
            ours.fractional_positions,
            atoms.get_scaled_positions(wrap=False),
            rtol=0,
            atol=1e-10,
            err_msg=where,
        )
