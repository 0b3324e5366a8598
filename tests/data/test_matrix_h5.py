"""Block-sparse matrix files: every DeepH-dock file reads and writes back identically; integrity errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from hamflow.data.matrix_h5 import MATRIX_FILES, BlockMatrix, read_matrix_h5, write_matrix_h5
from hamflow.errors import DataError

FIELDS = ("atom_pairs", "chunk_shapes", "chunk_boundaries", "entries")


def _matrix_files(root: Path) -> list[Path]:
    names = set(MATRIX_FILES.values())
    return sorted(p for p in root.rglob("*.h5") if p.name in names and "original" not in p.parts)


def _raw(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as handle:
        return {key: handle[key][()] for key in FIELDS}


def _assert_same(matrix: BlockMatrix, raw: dict[str, np.ndarray]) -> None:
    for key in FIELDS:
        value = getattr(matrix, key)
        assert value.dtype == raw[key].dtype, key
        np.testing.assert_array_equal(value, raw[key], err_msg=key)


def test_every_deeph_dock_matrix_round_trips(deeph_dock: Path, tmp_path: Path) -> None:
    paths = _matrix_files(deeph_dock)
    by_name = {name: sum(p.name == name for p in paths) for name in MATRIX_FILES.values()}
    assert by_name["hamiltonian.h5"] == 13 + 6 + 1 + 4 + 1
    assert by_name["density_matrix.h5"] == 6
    assert by_name["hamiltonian_pred.h5"] == 6
    for n, path in enumerate(paths):
        matrix = read_matrix_h5(path)
        _assert_same(matrix, _raw(path))
        out = tmp_path / f"{n}.h5"
        write_matrix_h5(out, matrix)
        _assert_same(read_matrix_h5(out), _raw(path))


def test_prediction_is_float32_and_blocks_match_layout(deeph_dock: Path) -> None:
    pred = read_matrix_h5(deeph_dock / "h2o/pred/dft/138/hamiltonian_pred.h5")
    truth = read_matrix_h5(deeph_dock / "h2o/dft/138/hamiltonian.h5")
    assert pred.entries.dtype == np.float32 and truth.entries.dtype == np.float64
    index = truth.pair_index()
    assert index[(0, 0, 0, 0, 1)] == 1
    block = truth.block(1)
    assert block.shape == (13, 5)
    np.testing.assert_array_equal(block.reshape(-1), truth.entries[169 : 169 + 65])
    # H is Hermitian: block (R, i, j) is the transpose of block (-R, j, i).
    for (r1, r2, r3, i, j), n in index.items():
        np.testing.assert_allclose(truth.block(n), truth.block(index[(-r1, -r2, -r3, j, i)]).T, atol=1e-8)


def test_write_with_dtype(tmp_path: Path) -> None:
    matrix = BlockMatrix.from_blocks([[0, 0, 0, 0, 0], [1, 0, 0, 0, 1]], [np.eye(2), np.ones((2, 3))])
    write_matrix_h5(tmp_path / "p.h5", matrix, dtype=np.float32)
    again = read_matrix_h5(tmp_path / "p.h5")
    assert again.entries.dtype == np.float32
    np.testing.assert_array_equal(again.block(1), np.ones((2, 3), dtype=np.float32))
    assert again.atom_pairs.dtype == np.int64


def test_spinful_complex_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pairs = [[0, 0, 0, 0, 0], [0, 0, 0, 0, 1], [-1, 0, 0, 1, 0], [0, 0, 0, 1, 1]]
    sizes = {0: 4, 1: 1}
    blocks = [
        rng.normal(size=(2 * sizes[i], 2 * sizes[j])) + 1j * rng.normal(size=(2 * sizes[i], 2 * sizes[j]))
        for *_, i, j in pairs
    ]
    matrix = BlockMatrix.from_blocks(pairs, blocks)
    assert matrix.entries.dtype == np.complex128 and matrix.num_pairs == 4
    write_matrix_h5(tmp_path / "hamiltonian.h5", matrix)
    with h5py.File(tmp_path / "hamiltonian.h5", "r") as handle:
        stored = handle["entries"].id.get_type()
        assert isinstance(stored, h5py.h5t.TypeCompoundID)  # h5py's complex compound (r, i)
    again = read_matrix_h5(tmp_path / "hamiltonian.h5")
    assert again.entries.dtype == np.complex128
    for n, block in enumerate(blocks):
        np.testing.assert_array_equal(again.block(n), block)
    np.testing.assert_array_equal(again.chunk_shapes, [[8, 8], [8, 2], [2, 8], [2, 2]])


def _write_raw(path: Path, **arrays: np.ndarray) -> None:
    with h5py.File(path, "w") as handle:
        for key, value in arrays.items():
            handle.create_dataset(key, data=value)


def _good_arrays() -> dict[str, np.ndarray]:
    matrix = BlockMatrix.from_blocks([[0, 0, 0, 0, 0], [0, 0, 0, 0, 1]], [np.eye(13), np.ones((13, 5))])
    return {key: getattr(matrix, key) for key in FIELDS}


@pytest.mark.parametrize(
    ("change", "key", "reason"),
    [
        ({"entries": np.zeros(230)}, "entries", "length 230 but chunk_boundaries ends at 234"),
        ({"chunk_boundaries": np.array([1, 169, 234])}, "chunk_boundaries", "starts at 1; expected 0"),
        ({"chunk_boundaries": np.array([0, 169, 233])}, "chunk_boundaries", "block 1 spans 64 entries"),
        ({"chunk_shapes": np.array([[13, 13], [-13, -5]])}, "chunk_shapes", "negative shape"),
        ({"chunk_shapes": np.array([13, 13, 13, 5])}, "chunk_shapes", "expected (2, 2)"),
        ({"atom_pairs": np.zeros((2, 4), dtype=np.int64)}, "atom_pairs", "expected (N, 5)"),
        ({"atom_pairs": np.zeros((2, 5))}, "atom_pairs", "dtype float64; expected integers"),
        ({"entries": np.zeros(234, dtype=np.int32)}, "entries", "dtype int32; expected float or complex"),
        ({"chunk_boundaries": np.array([0, 169])}, "chunk_boundaries", "expected (3,)"),
    ],
)
def test_integrity_errors(tmp_path: Path, change: dict, key: str, reason: str) -> None:
    path = tmp_path / "hamiltonian.h5"
    _write_raw(path, **{**_good_arrays(), **change})
    with pytest.raises(DataError) as info:
        read_matrix_h5(path, structure="h2o/3")
    message = str(info.value)
    assert message.startswith(f"structure h2o/3: {path}: key '{key}': "), message
    assert reason in message, message


def test_missing_dataset(tmp_path: Path) -> None:
    arrays = _good_arrays()
    del arrays["chunk_shapes"]
    _write_raw(tmp_path / "overlap.h5", **arrays)
    with pytest.raises(
        DataError, match=r"key 'chunk_shapes': dataset missing \(file holds: atom_pairs, chunk_b"
    ):
        read_matrix_h5(tmp_path / "overlap.h5")


def test_truncated_and_foreign_files(deeph_dock: Path, tmp_path: Path) -> None:
    source = deeph_dock / "periodic/dft/MoTe2/hamiltonian.h5"
    for size in (1000, source.stat().st_size // 2, source.stat().st_size - 100):
        cut = tmp_path / f"cut{size}.h5"
        cut.write_bytes(source.read_bytes()[:size])
        with pytest.raises(DataError, match="truncated or corrupt") as info:
            read_matrix_h5(cut, structure="MoTe2")
        assert str(info.value).startswith(f"structure MoTe2: {cut}")
    text = tmp_path / "text.h5"
    text.write_text("not hdf5")
    with pytest.raises(DataError, match="cannot open as HDF5"):
        read_matrix_h5(text)
    with pytest.raises(DataError, match="file not found"):
        read_matrix_h5(tmp_path / "absent.h5")


def test_refuses_to_write_inconsistent_matrix(tmp_path: Path) -> None:
    matrix = BlockMatrix(**{**_good_arrays(), "entries": np.zeros(3)})
    with pytest.raises(DataError, match="refusing to write"):
        write_matrix_h5(tmp_path / "x.h5", matrix)
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_keeps_old_file_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "hamiltonian.h5"
    shutil.copy(_write_and_return(tmp_path / "first.h5"), target)
    before = target.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(h5py.Group, "create_dataset", boom)
    with pytest.raises(OSError, match="disk full"):
        write_matrix_h5(target, BlockMatrix(**_good_arrays()))
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first.h5", "hamiltonian.h5"]


def _write_and_return(path: Path) -> Path:
    write_matrix_h5(path, BlockMatrix(**_good_arrays()))
    return path
