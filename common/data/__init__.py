"""Dataset loaders, preprocessing, splits and partitions."""
