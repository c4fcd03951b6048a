"""The GPT (nanoGPT names), its variants (MoE, linear attention), its parametrizations (SP,
muP, CompleteP), its FLOP counts and the coordinate check."""
