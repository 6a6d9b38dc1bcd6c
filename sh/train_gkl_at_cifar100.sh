#!/usr/bin/env bash
# Row 4: GKL-AT CIFAR-100 (DKLv2 sh/train_dkl_cifar100.sh).
# Extra arguments go to 'advtrain train' (e.g. optim.epochs=2 run.device=cpu).
exec bash "$(dirname "$0")/train_config.sh" configs/gkl_at_cifar100.yaml cifar100 average "$@"
