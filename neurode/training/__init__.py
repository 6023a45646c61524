"""neurode.training: the trainer, run directories, checkpoints and configuration.

Imports ``framework/`` and ``datasets/``, never ``plugins/``: models and
dynamics arrive through the registry. The public face is
``neurode.train(config) -> Run`` and ``neurode.load_run(path) -> Run``
(:mod:`neurode.training.run`); the ``neurode train``, ``evaluate``,
``predict`` and ``runs`` commands call the same functions.
"""
