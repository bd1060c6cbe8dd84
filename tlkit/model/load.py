"""Loading a saved tlkit model (re-exported as tlkit.load_model).

Keras and tlkit's layers are imported when a model is loaded, not when this module is.
"""


def load_model(path):
    """Load a saved tlkit model (model.keras).

    Models saved now are core Keras only (keras.models.load_model loads them without tlkit);
    tlkit's old ImagePreprocessing layer is registered first, so older run directories load too.
    The "preprocess" sub-model gets its `.mode` back.
    """
    import keras

    import tlkit.model.preprocessing as preprocessing  # registers ImagePreprocessing (older model.keras files)

    from tlkit.backbones.hub_build import import_keras_hub_for

    import_keras_hub_for(path)  # a KerasHub backbone inside: keras_hub registers its classes
    model = keras.saving.load_model(path)
    preprocessing.label_preprocess_mode(model)
    return model
