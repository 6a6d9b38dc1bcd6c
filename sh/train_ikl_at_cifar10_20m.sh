#!/usr/bin/env bash
# Row 7: IKL-AT CIFAR-10 + 20M EDM images, DM pipeline.
# Extra arguments go to 'advtrain train' (e.g. optim.epochs=2 run.device=cpu).
exec bash "$(dirname "$0")/train_config.sh" configs/ikl_at_cifar10_20m.yaml cifar10 best "$@"
