"""hamflow.data: the DeepH data format and the data stages (discover, validate, convert).

Modules:
  discover    find structure folders, the manifest (``scan_dft_dir``, ``write_manifest``)
  validate    check every structure's files (``validate_tree``, ``ValidationReport``)
  split       ``dataset_split.json`` (``make_split``, ``load_split``, ``write_split``)
  structure   one structure folder in memory (``load_structure``)
  poscar, info, matrix_h5, orbitals   the files of a structure and the orbital layout
  kspace      dense H(k), S(k) and generalized eigenvalues
  legacy      the legacy DeepH / DeepH-E3 converter (``convert_legacy``, ``convert_legacy_tree``)
"""
