#!/usr/bin/env bash
# Row 5: IKL-AT CIFAR-100 two-view AutoAugment, aug weight 0.3.
# Extra arguments go to 'advtrain train' (e.g. optim.epochs=2 run.device=cpu).
exec bash "$(dirname "$0")/train_config.sh" configs/gkl_at_cifar100_autoaug.yaml cifar100 average "$@"
