"""bstrain: train the dual-stream model on a feature store, and use it.

Three rooms, imported one way (tests/test_layout.py):

- core/       what training and inference share: the train config, the models (offline, live), checkpoints,
              normalisation statistics, window maths, the training data of a store, metrics,
              output gain and plots.
- loop/       the training loop: the trainer, one optimiser step, the window streams, losses,
              augmentation, gradient diagnostics, processes, validation/evaluation, fine-tuning.
- inference/  a trained model on new audio: predict, chunked streaming, live streams (sources,
              the live animator, pacing, the stream pipeline), output files, export, preview
              video, Live Link.

core imports neither of the others; loop and inference import core, never each other; cli.py
is the click layer over all three.
"""
