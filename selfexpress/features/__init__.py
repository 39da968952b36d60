"""Features: scattering transform, uncentred PCA and the cached scattering -> PCA pipeline."""

from .cached import FEATURE_VERSION, dataset_features, default_cache_dir, image_hash, scattering_pca
from .pca import PCAUncentred, pca_uncentred
from .scattering import prepare_images, scattering_features, scattering_output_dim

__all__ = [
    "scattering_features",
    "scattering_output_dim",
    "prepare_images",
    "pca_uncentred",
    "PCAUncentred",
    "scattering_pca",
    "dataset_features",
    "default_cache_dir",
    "image_hash",
    "FEATURE_VERSION",
]
