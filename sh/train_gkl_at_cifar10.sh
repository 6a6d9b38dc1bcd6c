#!/usr/bin/env bash
# Row 1: IKL/GKL-AT CIFAR-10 WRN-34-10 (scripts sh/train_dkl_cifar10.sh of DKLv1/v2).
# Extra arguments go to 'advtrain train' (e.g. optim.epochs=2 run.device=cpu).
exec bash "$(dirname "$0")/train_config.sh" configs/gkl_at_cifar10.yaml cifar10 average "$@"
