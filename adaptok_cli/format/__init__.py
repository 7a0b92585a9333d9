"""The .atok format and what reads it: the container (docs/FORMAT.md), its audio track, tar shards of
containers, datasets and batching for training loops, and bounded JSON from files adaptok did not write."""
