#!/usr/bin/env bash
# TRADES-AWP baseline, CIFAR-10 (DKL repo train_trades_cifar.py, beta 6).
# Extra arguments go to 'advtrain train' (e.g. optim.epochs=2 run.device=cpu).
exec bash "$(dirname "$0")/train_config.sh" configs/trades_awp_cifar10.yaml cifar10 average "$@"
