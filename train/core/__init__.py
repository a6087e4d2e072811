"""What training and inference share: config, model, checkpoints, statistics, windows, data."""
