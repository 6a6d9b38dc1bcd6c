#!/usr/bin/env bash
# LBGAT beta 9 + AWP, eps 8/255, CIFAR-100 (Cui2020Learnable_34_10_LBGAT9_eps_8_255).
# Extra arguments go to 'advtrain train' (e.g. optim.epochs=2 run.device=cpu).
exec bash "$(dirname "$0")/train_config.sh" configs/lbgat9_awp_cifar100.yaml cifar100 last "$@"
