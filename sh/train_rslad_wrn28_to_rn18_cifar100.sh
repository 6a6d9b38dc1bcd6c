#!/usr/bin/env bash
# RSLAD robust distillation, cifar100: ResNet-18 student from the RobustBench teacher Cui2023Decoupled_WRN-28-10
# (checkpoints/cifar100/Linf/Cui2023Decoupled_WRN-28-10.pt must be there). Evaluates the last weights, as the reference did.
# Extra arguments go to 'advtrain train' (e.g. optim.epochs=2 run.device=cpu).
exec bash "$(dirname "$0")/train_config.sh" configs/rslad_wrn28_to_rn18_cifar100.yaml cifar100 last "$@"
