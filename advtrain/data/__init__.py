"""Data for advtrain: CIFAR-10/100 and ``.npz`` image sets as tensors in [0,1] (NCHW float32, int64 labels).

No normalisation happens here; models that need it normalise inside with :data:`DATASET_MEAN` /
:data:`DATASET_STD`. Modules:

- :mod:`.names` -- dataset names, ``num_classes``, mean/std constants;
- :mod:`.npz` -- memory-mapped reading and validation of ``image``/``label`` npz files;
- :mod:`.sources` -- CIFAR binary / torchvision / npz sources and :func:`resolve_source`;
- :mod:`.datasets` -- :class:`ArrayDataset`, crop+flip and two-view AutoAugment transforms;
- :mod:`.sampling` -- seeding helpers and :class:`MixedSampler` (real + generated batches, DDP shards);
- :mod:`.loaders` -- :func:`build_train_loader`, :func:`set_loader_epoch`, :func:`load_test_arrays`.
"""
from advtrain.data.datasets import AUGMENTATIONS, ArrayDataset, TwoView, make_transform, random_crop_flip
from advtrain.data.loaders import (build_train_loader, load_holdout_arrays, load_test_arrays,
                                   set_loader_epoch, two_view_collate)
from advtrain.data.names import DATASET_MEAN, DATASET_STD, DATASETS, check_dataset, num_classes
from advtrain.data.npz import COMPRESSED_LIMIT, read_npz
from advtrain.data.sampling import MixedSampler, make_generator, seed_everything, worker_init_fn
from advtrain.data.sources import Source, load_arrays, read_cifar_binary, resolve_source

__all__ = [
    "AUGMENTATIONS", "ArrayDataset", "TwoView", "make_transform", "random_crop_flip",
    "build_train_loader", "load_holdout_arrays", "load_test_arrays", "set_loader_epoch", "two_view_collate",
    "DATASET_MEAN", "DATASET_STD", "DATASETS", "check_dataset", "num_classes",
    "COMPRESSED_LIMIT", "read_npz", "MixedSampler", "make_generator", "seed_everything", "worker_init_fn",
    "Source", "load_arrays", "read_cifar_binary", "resolve_source",
]
