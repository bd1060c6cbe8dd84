"""Training: from a checked config to a run directory.

    run_setup        strategy -> seeds -> data -> model -> compile options -> freezer -> the recipe's probe: one
                     set-up for the trainer, `tlkit doctor` and `tlkit lr-find`
    stages, optim    which blocks train in each stage (BatchNorm policy); optimizers, LR schedules, loss, compile
    methods/         discriminative LRs, L2-SP, EMA of weights
    feature_cache    head-only stages trained on the frozen backbone's features
    distribute       tf.distribute strategies, the chief of a multi-worker run, LR scaling
    runtime          accelerator, mixed precision, XLA, steps per execution
    callbacks        the callbacks of every stage
    checkpoint       per-epoch checkpoints and resume=
    lr_find          the LR range test (`tlkit lr-find`, optimizer.lr=auto)
    trainer          train(): set-up -> stage loop -> finalize
    calibration      temperature scaling after training
    run_results      what a finished run writes (model.keras, metrics.json, ...); metrics_record: metrics.json typed
    rundir           the run directory: its files, train.log, loading a run's config

It may import everything below it (the modules at tlkit's top level, backbones, config, data, model, recipe,
doctor); never a post-training tool (tlkit.tools) nor the command lines (tlkit.cli): whoever calls the trainer
hands the tools in (tlkit.cli.runner). distribute imports only tlkit.config.schema and tlkit.errors, and is pure
Python until a strategy is built: tlkit.config.validate checks trainer.strategy with it (tests/test_layers.py).
"""
