"""neurode.plugins.solvers."""
