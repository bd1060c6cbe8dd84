"""tlkit: transfer-learning recipes for image classification on Keras 3."""
__version__ = "0.1.0"
