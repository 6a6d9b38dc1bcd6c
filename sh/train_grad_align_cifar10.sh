#!/usr/bin/env bash
# GradAlign (Andriushchenko & Flammarion 2020), CIFAR-10 PreAct ResNet-18, lambda 0.2 at 8/255.
# The last epoch's weights are evaluated (the reference scripts evaluate the final model).
# Extra arguments go to 'advtrain train' (e.g. optim.epochs=2 run.device=cpu).
exec bash "$(dirname "$0")/train_config.sh" configs/grad_align_cifar10.yaml cifar10 last "$@"
