"""The model layer: from a config and a backbone spec to a Keras model that is right by construction.

    build          image (RGB 0-255) -> preprocess -> backbone -> pooling -> head -> logits (build_model), the
                   parts by name (backbone_of, head_of), and the saved model's probabilities (with_probabilities)
    preprocessing  the backbone's input preprocessing inside the model, core Keras only (tlkit.preprocessing_modes)
    load           loading a saved tlkit model (tlkit.load_model)
    pretrain       backbone.weights=tlkit:TASK: weights pretrained offline on a source task, ImageNet's stand-in
    multilabel     task=multilabel: sigmoid logits' loss and metrics, average precision, per-class thresholds

It may import the modules at tlkit's top level (errors, fileio, preprocessing_modes, ...), tlkit.backbones,
tlkit.config and tlkit.data (pretrain's source tasks); nothing of the recipe, the doctor, training, the tools or the
command lines (tests/test_layers.py).
"""
