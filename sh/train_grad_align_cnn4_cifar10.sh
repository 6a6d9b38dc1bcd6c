#!/usr/bin/env bash
# Catastrophic overfitting in GradAlign's one-layer CNN (Andriushchenko & Flammarion 2020, Fig. 11):
# FGSM training at 10/255, 30 epochs; the epoch lines show PGD-10 collapsing while FGSM rises, and the
# guard (warn) flags the epochs. The last epoch's weights are evaluated with AutoAttack.
# On a CPU with ../shared's images, the run that collapses in two minutes is
#   ADVTRAIN_DATA=../shared/data/cifar10-jpeg bash sh/co_reproduce_cpu.sh
# Extra arguments go to 'advtrain train' (e.g. guard.policy=rollback run.device=cpu).
exec bash "$(dirname "$0")/train_config.sh" configs/grad_align_cnn4_cifar10.yaml cifar10 last "$@"
