"""Tokenisers and what they need: the protocol, TinyTok, diffusers VAEs, model-file checks, calibration of
the dropping rule's unit, the cross-process cache, and which models a container needs (matching)."""
