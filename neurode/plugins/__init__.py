"""neurode's built-in plugins.

Each module is a plain pluggy plugin registering through the hooks of
``neurode.framework.hookspecs``, exactly as a third-party package would. The
registry loads them by name (``neurode.framework.registry.BUILTIN_PLUGINS``).
"""
