"""Data: manifests, scales, splits, pairs, scan readers, preprocessing, caching, datasets, phantoms."""
