"""hamflow.config: the TOML schemas and run settings (layer above data and graph; never imports train).

Modules:
  train_config     the training TOML: every key as an ``option`` with its roles; entry points
                   ``load_train_config``, ``parse_train_config``, ``dump_train_config``, ``with_overrides``,
                   ``stage_keys`` / ``resume_blocking_changes`` / ``graph_store_settings``
  train_keys_data  ``[system]`` and ``[data]`` of the training TOML (``SystemConfig``, ``DataConfig``)
  train_keys_model ``[model]`` and ``[process.train]`` (``ModelConfig``, ``TrainProcessConfig``)
  scheduler_config ``[process.train.scheduler]``: ``SchedulerConfig``, ``scheduler_config_from_section``
  infer_config     the inference TOML: ``load_infer_config``, ``parse_infer_config``
  schema           the key-table machinery (``option``, ``section``, ``parse_section``, ``key_roles``)
  toml_io          ``read_toml``, ``dump_toml``, ``apply_overrides``
  device           the ``[system] device`` string and JAX devices
  precision        ``[system] float_type``: dtypes and JAX precision
  logging_setup    ``deepx.log`` and the console (``configure_logging``, ``LOGGER_NAME``)
  key_tables       docs/config.md's key tables rendered from the schema (``update_document``)
"""
