#!/usr/bin/env bash
# LBGAT beta 0, CIFAR-100 (Cui2020Learnable_34_10_LBGAT0).
# Extra arguments go to 'advtrain train' (e.g. optim.epochs=2 run.device=cpu).
export EVAL_EPS=0.031  # trained and evaluated at 0.031 (SPEC 4.4, RobustBench)
exec bash "$(dirname "$0")/train_config.sh" configs/lbgat0_cifar100.yaml cifar100 last "$@"
