"""A trained model on new audio: predict, chunked and live streams, outputs, export, preview, Live Link."""
