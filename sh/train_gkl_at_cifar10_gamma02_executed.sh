#!/usr/bin/env bash
# Row 12 (executed, T=4): GKL-AT CIFAR-10 gamma 0.2 (DKLv2 script as it ran).
# Extra arguments go to 'advtrain train' (e.g. optim.epochs=2 run.device=cpu).
exec bash "$(dirname "$0")/train_config.sh" configs/gkl_at_cifar10_gamma02_executed.yaml cifar10 average "$@"
