"""Networks (backbones, fusion, heads), losses, the recipe registry, the sequence network and the model card."""
