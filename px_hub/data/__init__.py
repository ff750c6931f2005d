"""Labelled image datasets, the class-balanced pruning split, and preprocessing into batches."""
from .datasets import (
                       ANIMAL_MNIST_CLASSES,
                       ArrayImageDataset,
                       FileImageDataset,
                       HubImageDataset,
                       ImageDataset,
                       available_builtin_datasets,
                       dataset_from_hf,
                       load_image_dataset,
                       load_numpy_pickle,
                       register_builtin_dataset,
)
from .split import PruningSplit, ids_digest
from .transforms import ToRGB, eval_transform, make_batches

__all__ = ["ImageDataset", "ArrayImageDataset", "FileImageDataset", "HubImageDataset", "load_image_dataset",
           "dataset_from_hf", "register_builtin_dataset", "available_builtin_datasets", "load_numpy_pickle",
           "ANIMAL_MNIST_CLASSES", "PruningSplit", "ids_digest", "eval_transform", "make_batches", "ToRGB"]
