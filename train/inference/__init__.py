"""A trained model on new audio: predict, chunked streaming, outputs, export, preview, Live Link."""
