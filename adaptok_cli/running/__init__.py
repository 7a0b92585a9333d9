"""Running compress and decompress: options, the streaming pipeline, batches over files (locally or on Ray),
overlapped stages, video and remote I/O, and writing outputs without ever losing a file."""
