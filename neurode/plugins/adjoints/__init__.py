"""neurode.plugins.adjoints."""
