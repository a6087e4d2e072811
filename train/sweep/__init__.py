"""Experiments on cached features: sweeps (an Optuna study whose trials are fit runs) and the
comparison of runs."""
