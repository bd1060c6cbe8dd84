"""Post-training tools: what reads a finished run directory.

    evaluate           eval/ reports: report.json, confusion matrix, confidently wrong images, training curves
    multilabel_report  the same for task=multilabel: AP per class, mAP, F1 at the tuned thresholds, PR curves
    predict, tta       predictions on image files (`tlkit predict`); test-time augmentation
    export             serving exports with model cards (`tlkit export`)
    gradcam, explain   Grad-CAM at a backbone block; `tlkit explain`
    sweep              sweep summaries, failure.json, TensorBoard HParams (`tlkit sweep-summary`)

They may import training (its run directory, calibration) and everything below it; never the command lines
(tlkit.cli). Training imports none of them: tlkit.cli.runner hands evaluate and sweep to the trainer
(tests/test_layers.py).
"""
