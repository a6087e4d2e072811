"""bstrain: stream windows from a feature store and train the dual-stream model."""
