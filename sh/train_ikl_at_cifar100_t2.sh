#!/usr/bin/env bash
# Row 3: IKL-AT CIFAR-100 prior T 2 (2023 README row 6).
# Extra arguments go to 'advtrain train' (e.g. optim.epochs=2 run.device=cpu).
exec bash "$(dirname "$0")/train_config.sh" configs/ikl_at_cifar100_t2.yaml cifar100 average "$@"
