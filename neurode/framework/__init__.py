"""The core of neurode: contracts, the registry and the solving machinery.

Nothing here imports ``neurode.plugins``; concrete methods are found through
the registry only.
"""
