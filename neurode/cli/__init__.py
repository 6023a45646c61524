"""The ``neurode`` command line (typer).

``app.py`` holds the application and its entry point, ``group.py`` the root
group (plugin commands, error reporting), ``console.py`` what goes to stderr;
every other module is one command, exposing ``register(app)``.
"""
