"""neurode-example-plugin: a minimal third-party neurode plugin.

``plugin.py`` is the entry point neurode loads; ``dynamics.py`` holds the
component it registers and ``commands.py`` the command it adds to ``neurode``.
"""
