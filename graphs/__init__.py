"""onnxscript side: PRNG, masks, sampling and the generation loops of the single model."""
