#!/usr/bin/env bash
# Row 13: GKL-AT CIFAR-10 two-view AutoAugment, aug weight 0.5 (DKLv2 script).
# Extra arguments go to 'advtrain train' (e.g. optim.epochs=2 run.device=cpu).
exec bash "$(dirname "$0")/train_config.sh" configs/gkl_at_cifar10_autoaug.yaml cifar10 average "$@"
