"""The `adaptok` command: its commands (a thin layer over the Python API) and what they print."""
