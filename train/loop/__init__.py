"""The training loop: bstrain fit and evaluate (trainer, step, streams, losses, validation)."""
