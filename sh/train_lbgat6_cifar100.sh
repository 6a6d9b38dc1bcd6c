#!/usr/bin/env bash
# LBGAT beta 6, CIFAR-100 (Cui2020Learnable_34_10_LBGAT6).
# Extra arguments go to 'advtrain train' (e.g. optim.epochs=2 run.device=cpu).
exec bash "$(dirname "$0")/train_config.sh" configs/lbgat6_cifar100.yaml cifar100 last "$@"
