"""hamflow.train: training, from a resolved TrainConfig to a DeepH-pack run directory.

Entry point: ``run.train(cfg)`` (``hamflow train``), which calls, in order:
  run_dir      the run folder, its lock and ``metrics.csv`` (``new_run_dir``, ``make_run_dir``)
  state        fresh / resume / continue / fine-tune (``choose_resume``, ``restore_or_initialize``,
               ``EpochAccumulator``, ``TrainProgress``, ``save_latest``)
  data         graph store, split, buckets, batches (``open_data``, ``plan_batches``, ``Batcher``)
  saved_model  ``ModelSpec``, ``model_spec``, ``build_network``, loading saved models (used by infer)
  loop         the epochs and stop rules (``fit``, ``compile_buckets``)
  test_pass    the final per-structure test pass: DeepH-pack's ``test-step`` lines in deepx.log and
               ``test_metrics.csv`` (``final_test_pass``)
  step         the pure jittable steps (``make_steps``, ``make_optimizer``, ``TrainState``)
Around them: checkpoint (atomic, hash-checked), losses, normaliser, baseline,
onsite_baseline, schedules (the learning-rate formulas) and plateau (the reduce-on-plateau rule).
"""
