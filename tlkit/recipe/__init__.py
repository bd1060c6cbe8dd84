"""The default recipe, and what it checks and measures before anything trains.

    facts        what the recipe looks at, gathered without TensorFlow (DatasetFacts)
    auto         the rules: what a config leaves null is chosen from the data, each choice logged with its rule
    preflight    everything that can fail before TensorFlow starts, in one call (check_config, check_run)
    frozen_pass  one inference pass through the pretrained model: pooled features, BatchNorm input statistics
    probe        a linear probe on those features: how near the transfer is, whether a mirror keeps the label

It may import the modules at tlkit's top level, tlkit.backbones, tlkit.config, tlkit.data and tlkit.model; nothing
of the doctor, training, the tools or the command lines (tests/test_layers.py).
"""
