#!/usr/bin/env bash
# ARD robust distillation, cifar10: ResNet-18 student from the RobustBench teacher Cui2023Decoupled_WRN-34-10
# (checkpoints/cifar10/Linf/Cui2023Decoupled_WRN-34-10.pt must be there). Evaluates the last weights, as the reference did.
# Extra arguments go to 'advtrain train' (e.g. optim.epochs=2 run.device=cpu).
exec bash "$(dirname "$0")/train_config.sh" configs/ard_wrn34_to_rn18_cifar10.yaml cifar10 last "$@"
