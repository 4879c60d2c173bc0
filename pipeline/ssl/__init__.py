"""Self-supervised pretraining (SimCLR, SimSiam) on Ray Train; checkpoints feed the embed stage.

Exports load on first use (:mod:`pipeline.lazy`): the embed step reads the model store and
checkpoints without importing lightly, torchvision or Ray Train.
"""

from pipeline.lazy import lazy_exports

_EXPORTS = {
    "load_backbone": "checkpoint",
    "read_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "SimCLR": "methods",
    "SimSiam": "methods",
    "build_ssl_model": "methods",
    "pretrain": "train",
    "run_pretrain": "train",
    "PretrainResult": "train",
    "build_model": "train",
    "train_loop_per_worker": "train",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
