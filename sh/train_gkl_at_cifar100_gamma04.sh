#!/usr/bin/env bash
# Row 11: GKL-AT CIFAR-100 gamma 0.4 (DKLv2 script, no reported result).
# Extra arguments go to 'advtrain train' (e.g. optim.epochs=2 run.device=cpu).
exec bash "$(dirname "$0")/train_config.sh" configs/gkl_at_cifar100_gamma04.yaml cifar100 average "$@"
