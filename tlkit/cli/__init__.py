"""The top: the entry points, which compose training with the post-training tools.

    main            the `tlkit` command line (`python -m tlkit`, the console script tlkit.cli.main:main)
    train_command   `tlkit train` / `python train.py`: the override guard, then Hydra composes and trains
    compose         what `tlkit doctor`, `lr-find` and `reproduce` compose: pkg://tlkit.conf plus --config-dir
    tool_commands   `tlkit evaluate`, `predict`, `export`, `explain` and `sweep-summary` on key=value arguments
    runner          pre-flight -> trainer -> the post-training tools (tlkit.train, train.py, `tlkit reproduce`)
    reproduce       `tlkit reproduce`: train a recipe and compare it with its published result

They may import every layer below. runner and reproduce import none of the command lines (reproduce is handed
compose_config), and nothing outside this package imports it but tlkit/__main__.py (main) and the facade's
tlkit.train (runner); this file imports nothing, so tlkit.train does not load the command line
(tests/test_layers.py).
"""
