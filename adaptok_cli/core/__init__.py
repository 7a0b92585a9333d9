"""The codec core: frames to latent positions (layout), which to keep (masking), the chunk-by-chunk chain
(codec) and the Latent Inpainting Transformer that fills what was dropped (lit)."""
