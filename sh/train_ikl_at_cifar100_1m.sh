#!/usr/bin/env bash
# Row 8: IKL-AT CIFAR-100 + 1M EDM images, DM pipeline.
# Extra arguments go to 'advtrain train' (e.g. optim.epochs=2 run.device=cpu).
exec bash "$(dirname "$0")/train_config.sh" configs/ikl_at_cifar100_1m.yaml cifar100 best "$@"
