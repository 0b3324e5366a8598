"""hamflow.infer: prediction and evaluation with a trained model (never imports the training loop).

Modules:
  stage     ``hamflow infer`` (``run_inference``)
  predict   load a trained model and predict blocks (``load_trained_model``, ``make_predict_fn``,
            ``predict_graphs``, ``graph_prediction``, ``write_prediction``)
  evaluate  ``hamflow evaluate`` (predictions against DFT files: ``evaluate_predictions``)
  metrics   entry errors per structure, element pair, shell pair (``structure_errors``)
  bands     eigenvalue and band errors (``eigenvalue_errors``, ``k_points_for``)
  plots     figures of a run and of an evaluation (``plot_all``)
"""
