"""``hamflow bands``: sparse shift-invert against dense eigh, ASE's automatic path, the CLI end to end,
and the error for a missing overlap.h5."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from hamflow.cli import main
from hamflow.errors import DataError
from hamflow.infer.band_structure import compute_band_structure

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import bands_large  # noqa: E402


def test_sparse_equals_dense_on_mote2(deeph_dock: Path) -> None:
    folder = deeph_dock / "periodic" / "dft" / "MoTe2"
    options = {"matrix_file": "hamiltonian.h5", "num_bands": 10}
    dense = compute_band_structure(folder, solver="dense", **options)
    sparse = compute_band_structure(folder, solver="sparse", **options)
    assert dense.path.kind == "k_path" and dense.eigenvalues.shape == (140, 10)
    assert sparse.solver == "sparse" and dense.solver == "dense"
    # the 10 states nearest E_F = 8.89 eV, at complex k (M, K, between) as well as Gamma
    np.testing.assert_allclose(sparse.eigenvalues, dense.eigenvalues, atol=1e-6)
    assert np.abs(dense.eigenvalues - 8.894647969025222).max() < 6.0


def test_synthetic_crystal_sparse_dense_and_auto_path(tmp_path: Path) -> None:
    folder = bands_large.write_silicon(tmp_path / "si16", 16, cutoff=4.0)  # 2 x 2 x 2 primitive cells
    assert not (folder / "K_PATH").exists()
    dense = compute_band_structure(folder, solver="dense", num_bands=8, around=0.5, num_k=20)
    assert dense.path.kind == "auto" and dense.path.source == "ase:GXWKGLUWLK,UX"
    assert [name for _, name in dense.path.labels][:3] == ["G", "X", "X"]
    sparse = compute_band_structure(folder, solver="sparse", num_bands=8, around=0.5, num_k=20)
    np.testing.assert_allclose(sparse.eigenvalues, dense.eigenvalues, atol=1e-6)
    full = compute_band_structure(folder, solver="dense", num_k=20)
    assert full.eigenvalues.shape[1] == 16 * 13 and full.around is None
    assert np.all(np.diff(full.distances) >= 0)


def test_cli_end_to_end(tmp_path: Path, capsys) -> None:
    folder = bands_large.write_silicon(tmp_path / "si2", 2, cutoff=3.0)
    out = tmp_path / "out"
    code = main(["bands", str(folder), "--k-path", "auto", "--num-k", "12", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert "dense solver, N = 26" in capsys.readouterr().out
    with np.load(out / "bands.npz") as data:
        assert data["eigenvalues"].shape[1] == 26 and str(data["solver"]) == "dense"
        assert len(data["distances"]) == len(data["k_frac"])
    assert (out / "bands.png").stat().st_size > 1000


def test_missing_overlap_is_one_clear_line(tmp_path: Path, capsys) -> None:
    folder = bands_large.write_silicon(tmp_path / "si2", 2, cutoff=3.0)
    (folder / "overlap.h5").unlink()
    with pytest.raises(DataError, match=r"overlap.h5.*no overlap.h5: the bands of a non-orthogonal basis"):
        compute_band_structure(folder)
    assert main(["bands", str(folder)]) == 1
    assert "overlap S(k)" in capsys.readouterr().err


def test_molecule_is_gamma_only(deeph_dock: Path, tmp_path: Path) -> None:
    folder = tmp_path / "h2o"
    shutil.copytree(deeph_dock / "h2o" / "dft" / "138", folder)
    bands = compute_band_structure(folder, matrix_file="hamiltonian.h5", k_path="auto")
    assert bands.path.kind == "gamma" and bands.eigenvalues.shape[0] == 1
