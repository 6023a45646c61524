"""neurode.plugins.loaders."""
