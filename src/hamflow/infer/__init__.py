"""hamflow.infer: prediction and evaluation with a trained model (never imports the training loop).

Modules:
  stage     ``hamflow infer`` (``run_inference``)
  predict   load a trained model and predict blocks (``load_trained_model``)
  evaluate  ``hamflow evaluate`` (predictions against DFT files)
  metrics   entry errors per structure, element pair, shell pair
  bands     eigenvalue and band errors
  plots     figures of a run and of an evaluation
"""
