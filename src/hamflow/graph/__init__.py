"""hamflow.graph: structures -> graphs -> graph stores, and the common orbital basis and irreps rules.

Modules:
  stage            the graph stage (``build_graph_store``, ``build_graphs``)
  stage_config     what the graph stage reads of a configuration (``GraphStageConfig``, a Protocol)
  structure_graph  one structure -> one ``StructureGraph``
  store            graph stores in HDF5 (``GraphStore``, ``write_store``, ``read_store_meta``)
  basis            the common orbital basis (``CommonBasis``, ``common_basis``, ``parse_orbital_types``)
  irreps           the one ``net_irreps`` rule, net types and parity (``check_net_irreps``,
                   ``parse_net_irreps``, ``default_net_irreps``, ``NET_TYPE_ALIASES``, ``check_parity_rule``)
  batch            the padded ``GraphBatch``
  collate          graphs -> one padded ``GraphBatch`` (``collate``)
  buckets          shape buckets for training and inference batches (``plan_buckets``,
                   ``assign_to_plan``, ``epoch_batches``, ``padding_waste``, ``BucketPlan``)
  neighbours       edges from a periodic neighbour search (``neighbour_edges``)
"""
