"""neurode.cli."""
