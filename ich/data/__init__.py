"""The data stages' computations: labels CSV, index, split, sample, preprocess, augment, the synthetic set,
pseudonyms and slice context (neighbours along z)."""
