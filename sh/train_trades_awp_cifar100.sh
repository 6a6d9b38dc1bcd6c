#!/usr/bin/env bash
# TRADES-AWP baseline, CIFAR-100 (DKL repo sh/train_trades_cifar100.sh, beta 9).
# Extra arguments go to 'advtrain train' (e.g. optim.epochs=2 run.device=cpu).
exec bash "$(dirname "$0")/train_config.sh" configs/trades_awp_cifar100.yaml cifar100 average "$@"
