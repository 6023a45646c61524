"""neurode-broken-plugin: a plugin whose module cannot be imported, on purpose.

It exists to show (and test) that one broken plugin costs only a warning:
neurode keeps working and ``neurode plugins`` reports the failure.
"""
