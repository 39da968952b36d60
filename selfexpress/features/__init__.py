"""Features: scattering transform, uncentred PCA, the cached scattering -> PCA pipeline and its fitted form
:class:`ScatteringPCA` (the transform that travels inside model files)."""

from .cached import FEATURE_VERSION, dataset_features, default_cache_dir, image_hash, scattering_pca
from .pca import PCAUncentred, pca_uncentred
from .scattering import prepare_images, scattering_features, scattering_output_dim
from .transform import ScatteringPCA, features_sidecar, read_features_sidecar

__all__ = [
    "ScatteringPCA",
    "features_sidecar",
    "read_features_sidecar",
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
