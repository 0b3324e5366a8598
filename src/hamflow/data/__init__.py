"""hamflow.data: the DeepH data format and the data stages (discover, validate, convert).

Modules:
  discover    find structure folders, the manifest (``scan_dft_dir``, ``write_manifest``)
  validate    check every structure's files (``validate_tree``, ``ValidationReport``)
  split       ``dataset_split.json`` (``make_split``, ``load_split``, ``write_split``)
  structure   one structure folder in memory (``load_structure``)
  poscar      ``POSCAR`` (``Poscar``, ``read_poscar``, ``write_poscar``)
  info        ``info.json`` (``StructureInfo``, ``read_info``, ``write_info``)
  matrix_h5   the matrix .h5 files (``BlockMatrix``, ``read_matrix_h5``, ``write_matrix_h5``)
  orbitals    elements and the orbital layout (``shell_ls``, ``atom_orbital_offsets``)
  kspace      dense H(k), S(k) and generalized eigenvalues (``dense_at_k``, ``band_eigenvalues``)
  legacy      the legacy DeepH / DeepH-E3 converter (``convert_legacy``, ``convert_legacy_tree``)
"""
