"""Data: synthetic unions of subspaces, file readers and named benchmark datasets."""

from .synthetic import make_union_of_subspaces
from .loaders import download_file, load_array, load_idx, load_labels, load_mat
from .datasets import Dataset, dataset_missing_files, default_data_dir, list_datasets, load_dataset

__all__ = [
    "make_union_of_subspaces",
    "load_idx",
    "load_mat",
    "load_array",
    "load_labels",
    "download_file",
    "Dataset",
    "load_dataset",
    "list_datasets",
    "default_data_dir",
    "dataset_missing_files",
]
