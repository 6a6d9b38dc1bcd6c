#!/usr/bin/env bash
# Row 12 (intended, T=1): GKL-AT CIFAR-10 gamma 0.2 (DKLv2 script).
# Extra arguments go to 'advtrain train' (e.g. optim.epochs=2 run.device=cpu).
exec bash "$(dirname "$0")/train_config.sh" configs/gkl_at_cifar10_gamma02_intended.yaml cifar10 average "$@"
