#!/usr/bin/env bash
# Row 2: IKL-AT CIFAR-100 alpha 3 (DKLv1 sh/train_dkl_cifar100.sh, first run).
# Extra arguments go to 'advtrain train' (e.g. optim.epochs=2 run.device=cpu).
exec bash "$(dirname "$0")/train_config.sh" configs/ikl_at_cifar100_a3.yaml cifar100 average "$@"
