"""Loading a saved tlkit model (re-exported as tlkit.load_model).

Keras and tlkit's layers are imported when a model is loaded, not when this module is.
"""


def load_model(path):
    """Load a saved tlkit model (model.keras): registers tlkit's layers first."""
    import keras

    import tlkit.preprocessing  # noqa: F401  (registers ImagePreprocessing)

    return keras.saving.load_model(path)
