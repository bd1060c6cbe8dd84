"""Fine-tune an ImageNet backbone: `python train.py backbone=resnet50 data=folder data.path=/my/images`.

The same command as `tlkit train [overrides]` (tlkit/cli/train_command.py), kept for a checkout: the configs are the
package's (tlkit/conf/), your own folder joins them with --config-dir DIR.
"""
from tlkit.cli.train_command import main

if __name__ == "__main__":
    main()
