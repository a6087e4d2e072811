"""What both stages use: configs and hashes, channels, frame grid, audio decoding, targets,
feature extractors, the per-file featurize function and the store schema and reader."""
