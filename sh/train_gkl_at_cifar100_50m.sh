#!/usr/bin/env bash
# Row 10: GKL-AT CIFAR-100 + 50M EDM images, DM pipeline.
# Extra arguments go to 'advtrain train' (e.g. optim.epochs=2 run.device=cpu).
exec bash "$(dirname "$0")/train_config.sh" configs/gkl_at_cifar100_50m.yaml cifar100 best "$@"
