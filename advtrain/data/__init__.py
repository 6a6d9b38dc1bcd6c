"""Data for advtrain: CIFAR-10/100 and ``.npz`` image sets as tensors in [0,1] (NCHW float32, int64 labels).

No normalisation happens here; models that need it normalise inside with :data:`DATASET_MEAN` /
:data:`DATASET_STD`. Modules:

- :mod:`.facts` -- THE table of dataset facts (:data:`FACTS`; adding a dataset is one row);
- :mod:`.names` -- dataset names, ``num_classes``, mean/std constants (live views of the table);
- :mod:`.npz` -- memory-mapped reading and validation of ``image``/``label`` npz files, the
  decompress-once cache for compressed ones;
- :mod:`.sources` -- CIFAR binary / torchvision / npz sources and :func:`resolve_source`;
- :mod:`.provenance` -- :func:`provenance`: which source and files (sha256), subset and seed;
- :mod:`.augment` -- batched crop+flip on the training device (:class:`DeviceLoader`), seeds;
- :mod:`.datasets` -- :class:`ArrayDataset` (batched uint8 reads, two-view AutoAugment);
- :mod:`.sampling` -- global seeding and :class:`MixedSampler` (real + generated batches, DDP shards);
- :mod:`.loaders` -- :func:`build_train_loader`, :func:`set_loader_epoch`, :func:`load_test_arrays`.
"""
from advtrain.data.augment import DeviceLoader, crop_flip_batch, derive_seed, random_crop_flip
from advtrain.data.datasets import AUGMENTATIONS, ArrayDataset
from advtrain.data.facts import FACTS, DatasetFacts, facts
from advtrain.data.loaders import build_train_loader, load_holdout_arrays, load_test_arrays, set_loader_epoch
from advtrain.data.names import DATASET_MEAN, DATASET_STD, DATASETS, check_dataset, num_classes
from advtrain.data.npz import COMPRESSED_LIMIT, read_npz
from advtrain.data.provenance import provenance
from advtrain.data.sampling import MixedSampler, seed_everything
from advtrain.data.sources import Source, load_arrays, read_cifar_binary, resolve_source

__all__ = [
    "FACTS", "DatasetFacts", "facts",
    "DeviceLoader", "crop_flip_batch", "derive_seed", "random_crop_flip", "AUGMENTATIONS", "ArrayDataset",
    "build_train_loader", "load_holdout_arrays", "load_test_arrays", "set_loader_epoch",
    "DATASET_MEAN", "DATASET_STD", "DATASETS", "check_dataset", "num_classes",
    "COMPRESSED_LIMIT", "read_npz", "provenance", "MixedSampler", "seed_everything",
    "Source", "load_arrays", "read_cifar_binary", "resolve_source",
]
