#!/usr/bin/env bash
# FGSM-RS (Wong et al. 2020), CIFAR-10 PreAct ResNet-18.
# The last epoch's weights are evaluated (the reference scripts evaluate the final model).
# Extra arguments go to 'advtrain train' (e.g. optim.epochs=2 run.device=cpu).
exec bash "$(dirname "$0")/train_config.sh" configs/fgsm_rs_cifar10.yaml cifar10 last "$@"
