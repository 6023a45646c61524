"""Butcher tableaus of the built-in explicit Runge–Kutta methods, one family per file."""
