"""Log lines of the libraries that a t2i-batch user cannot act on, kept out of their terminal and logs.

transformers 5 says once per class that an image processor falls back to its PIL version because
torchvision is not installed (diffusers imports CLIP's and SigLIP's at import time). The toolkit needs no
torchvision, and the PIL version is what transformers 4 used: the line is noise to every new user.
Filtered by its text on the one logger that writes it, so every other warning of transformers stays.
"""
import logging

_TORCHVISION_FALLBACK = "requires torchvision (not installed); falling back to"


class _DropTorchvisionFallback(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return _TORCHVISION_FALLBACK not in record.getMessage()


def quiet_library_noise() -> None:
    """Call before importing diffusers or transformers (safe to call again)."""
    logger = logging.getLogger("transformers.utils.import_utils")
    if not any(isinstance(f, _DropTorchvisionFallback) for f in logger.filters):
        logger.addFilter(_DropTorchvisionFallback())
