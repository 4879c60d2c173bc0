"""Self-supervised pretraining (SimCLR, SimSiam) on Ray Train; checkpoints feed the embed stage."""

from pipeline.ssl.backbones import SmallCNN, build_ssl_backbone
from pipeline.ssl.checkpoint import load_backbone, read_checkpoint, save_checkpoint
from pipeline.ssl.methods import SimCLR, SimSiam, build_ssl_model

__all__ = [
    "SimCLR",
    "SimSiam",
    "SmallCNN",
    "build_ssl_backbone",
    "build_ssl_model",
    "load_backbone",
    "read_checkpoint",
    "save_checkpoint",
    "pretrain",
    "run_pretrain",
    "PretrainResult",
    "build_model",
]


def __getattr__(name: str):
    # The Ray-dependent driver is imported lazily so load_backbone stays light for the embed stage.
    if name in ("pretrain", "run_pretrain", "PretrainResult", "build_model", "train_loop_per_worker"):
        from pipeline.ssl import train

        return getattr(train, name)
    raise AttributeError(name)
