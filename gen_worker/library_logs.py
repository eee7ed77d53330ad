"""Log lines of the libraries that a t2i-batch user cannot act on, kept out of their terminal and logs.

transformers 5 says once per class that an image processor falls back to its PIL version because
torchvision is not installed (diffusers imports CLIP's and SigLIP's at import time). The toolkit needs no
torchvision, and the PIL version is what transformers 4 used: the line is noise to every new user.
Filtered by its text on the one logger that writes it, so every other warning of transformers stays.
torchao (--quantize) says at import that its C++ kernels do not match this torch: the CPU quantization
t2i-batch uses is Python and torch ops, and a user cannot act on the line either.
"""
import logging

_TORCHVISION_FALLBACK = "requires torchvision (not installed); falling back to"


_TORCHAO_KERNELS = "Skipping import of cpp extensions due to incompatible torch version"


class _DropTorchvisionFallback(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return _TORCHVISION_FALLBACK not in record.getMessage()


class _DropTorchaoKernels(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return _TORCHAO_KERNELS not in record.getMessage()


def quiet_library_noise() -> None:
    """Call before importing diffusers or transformers (safe to call again)."""
    logger = logging.getLogger("transformers.utils.import_utils")
    if not any(isinstance(f, _DropTorchvisionFallback) for f in logger.filters):
        logger.addFilter(_DropTorchvisionFallback())
    torchao = logging.getLogger("torchao")
    if not any(isinstance(f, _DropTorchaoKernels) for f in torchao.filters):
        torchao.addFilter(_DropTorchaoKernels())
