"""neurode.datasets."""
