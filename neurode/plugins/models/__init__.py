"""neurode.plugins.models: built-in trainable models (registered through ``register_models``)."""
