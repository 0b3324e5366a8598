"""hamflow: from DFT calculations to a trained E(3)-equivariant Hamiltonian network (DeepH method).

Subpackages, lowest layer first (docs/architecture.md; each ``__init__`` names its modules):
  errors, atomic    one-line errors (``HamflowError``, ``ConfigError``, ``DataError``), atomic writes
  data              the DeepH data format and the data stages
  graph             structures -> graphs -> graph stores, batches and shape buckets
  config            the TOML schemas and run settings
  nn                the equivariant networks
  train             training (``train.run.train``)
  infer             prediction, evaluation, plots (``infer.stage.run_inference``)
  cli, cli_data     the ``hamflow`` command (``cli.main``); ``__main__`` for ``python -m hamflow``
  workflow_support  the logic behind the Snakemake workflow
"""

__version__ = "0.1.0"
