"""neurode.plugins.dynamics."""
