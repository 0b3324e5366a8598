"""hamflow.nn: the equivariant networks (flax + e3nn-jax).

Modules:
  model       ``build_model`` (entry point), ``init_params``, ``count_parameters``
  sparrow     the ``sparrow`` / ``normal`` network
  eagle       the ``eagle`` / ``accurate`` network
  block_head  the Clebsch-Gordan block readout (``BlockReadout``)
  dropout     equivariant dropout of whole irrep channels (``irreps_dropout``, training step only)
  layers      equivariant building blocks (``gate``, ``tensor_product_mul1``, ``EquivariantLayerNorm``)
  radial      edge geometry and radial features (``edge_geometry``, ``gaussian_basis``)
  wigner      Wigner D matrices (``wigner_d_standard``, ``irreps_rotation``)
"""
