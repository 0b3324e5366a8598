"""hamflow.train: training, from a resolved TrainConfig to a DeepH-pack run directory.

Entry point: ``run.train(cfg)`` (``hamflow train``; module run), which calls, in order:
  run_dir      the run folder, its lock and ``metrics.csv`` (``new_run_dir``, ``make_run_dir``)
  state        fresh / resume / continue / fine-tune (``choose_resume``, ``restore_or_initialize``,
               ``EpochAccumulator``, ``TrainProgress``, ``save_latest``)
  data         graph store, split, buckets, batches (``open_data``, ``plan_batches``, ``Batcher``)
  saved_model  ``ModelSpec``, ``model_spec``, ``build_network``, loading saved models (used by infer)
  loop         the epochs and stop rules (``fit``, ``compile_buckets``)
  test_pass    the final per-structure test pass: DeepH-pack's ``test-step`` lines in deepx.log and
               ``test_metrics.csv`` (``final_test_pass``)
  step         the pure jittable steps (``make_steps``, ``make_optimizer``, ``TrainState``)
Around them:
  checkpoint   atomic, hash-checked checkpoints (``RunLayout``, ``newest_resumable``, ``RunLock``)
  losses       block losses, masks and gauge honoured (``block_loss``)
  normaliser   the equivariant target normalisation (``Normaliser``)
  baseline     the two-centre off-site baseline, least squares (``Baseline``, ``BaselineFit``)
  onsite_baseline       the on-site neighbour-sum baseline (``OnsiteBaseline``, ``OnsiteBaselineFit``)
  environment_baseline  the off-site environment baseline (``EnvironmentBaseline``,
                        ``EnvironmentBaselineFit``)
  schedules    the learning-rate formulas (``schedule_table``, ``schedule_ends_training``)
  plateau      the reduce-on-plateau rule (``plateau_update``)
"""
