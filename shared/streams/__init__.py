"""Features of audio that arrives over time: chunked (whole-window re-extraction per chunk,
for the offline model) and live (incremental, row by row, for the live model)."""
