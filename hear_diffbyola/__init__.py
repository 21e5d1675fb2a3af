"""hear-diffbyola: difference-aware BYOL-A audio representations."""
__version__ = "0.1.0"

# The package itself is a HEAR 2021 module: `hear-validator hear_diffbyola --model ...`.
from .hear import get_scene_embeddings, get_timestamp_embeddings, load_model  # noqa: E402

__all__ = ["load_model", "get_scene_embeddings", "get_timestamp_embeddings", "__version__"]
