"""``strata curate``: the curation pipeline as a plain list of steps over one run directory.

    [pretrain] -> embed -> [dedup] -> cluster -> sample -> [report]

With ``input.format=embeddings`` the embed step imports vectors made elsewhere (any modality) and
the later steps run on them unchanged; dedup keeps to what needs no pixels.

:func:`curate_steps` builds the list (:class:`pipeline.steps.Step`), :func:`pipeline.steps.run_steps`
runs it. Each step skips itself when it finished before with the same config and the same inputs
(see :meth:`pipeline.rundir.RunDir.step`), so rerunning a command resumes after the last finished
step, a changed input or setting recomputes exactly the steps that depend on it, and ``force``
recomputes everything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.artifacts import (
    CLUSTERS,
    DUPLICATES,
    EMBEDDINGS,
    KEPT,
    MANIFEST,
    PRETRAIN_CHECKPOINT,
    REJECTS,
    REPORT,
)
from pipeline.dedup.run import run_dedup
from pipeline.embed.stage import run_embed
from pipeline.io.embeddings import is_embeddings_input
from pipeline.kmeans.run import run_cluster
from pipeline.report import write_report
from pipeline.rundir import Artifact, RunDir
from pipeline.sampling.run import run_sample
from pipeline.stage import preprocess_specs
from pipeline.steps import Step, run_steps


@dataclass
class PretrainStep:
    """Self-supervised pretraining of the backbone (Ray Train) -> ``pretrain/checkpoint``."""

    config: dict
    input_cfg: dict
    seed: int
    name: str = "pretrain"
    inputs: tuple[Artifact, ...] = ()
    outputs: tuple[Artifact, ...] = (PRETRAIN_CHECKPOINT,)

    def run(self, run: RunDir, force: bool) -> dict[str, Any]:
        from pipeline.ssl.train import run_pretrain

        ssl, train = dict(self.config["ssl"]), dict(self.config["train"])
        return run_pretrain(run, self.input_cfg, ssl, train, seed=self.seed, force=force)


@dataclass
class EmbedStep:
    """Read, preprocess and embed every input image -> ``embeddings/``, ``rejects.parquet``."""

    config: dict
    input_cfg: dict
    preprocess: list = field(default_factory=list)
    name: str = "embed"
    inputs: tuple[Artifact, ...] = ()
    outputs: tuple[Artifact, ...] = (EMBEDDINGS, REJECTS)

    def run(self, run: RunDir, force: bool) -> dict[str, Any]:
        return run_embed(run, self.input_cfg, self.config, preprocess=self.preprocess, force=force)


@dataclass
class DedupStep:
    """Exact, copy and (optionally) semantic duplicates -> ``dedup/``."""

    config: dict
    name: str = "dedup"
    inputs: tuple[Artifact, ...] = (EMBEDDINGS,)
    outputs: tuple[Artifact, ...] = (DUPLICATES, KEPT)

    def run(self, run: RunDir, force: bool) -> dict[str, Any]:
        return run_dedup(run, self.config, force=force)


@dataclass
class ClusterStep:
    """Hierarchical k-means of the embeddings (less the duplicates) -> ``clusters/``."""

    config: dict
    seed: int
    drop_duplicates: bool
    name: str = "cluster"
    outputs: tuple[Artifact, ...] = (CLUSTERS,)

    @property
    def inputs(self) -> tuple[Artifact, ...]:
        return (EMBEDDINGS, *((DUPLICATES,) if self.drop_duplicates else ()))

    def run(self, run: RunDir, force: bool) -> dict[str, Any]:
        return run_cluster(run, self.config, force=force, seed=self.seed, drop_duplicates=self.drop_duplicates)


@dataclass
class SampleStep:
    """Balanced sampling of the clusters -> ``manifest.parquet``."""

    config: dict
    seed: int
    name: str = "sample"
    inputs: tuple[Artifact, ...] = (CLUSTERS,)
    outputs: tuple[Artifact, ...] = (MANIFEST,)

    def run(self, run: RunDir, force: bool) -> dict[str, Any]:
        return run_sample(run, self.config, force=force, seed=self.seed)


@dataclass
class ReportStep:
    """The HTML report of the run -> ``report.html``."""

    config: dict
    curate_cfg: dict
    inputs: tuple[Artifact, ...]
    name: str = "report"
    outputs: tuple[Artifact, ...] = (REPORT,)

    def run(self, run: RunDir, force: bool) -> dict[str, Any]:
        with run.step(self.name, self.config, list(self.inputs), force=force) as step:
            if not step.skipped:
                write_report(run, self.curate_cfg)
        return step.result


def curate_steps(run: RunDir, cfg: dict) -> list[Step]:
    """The steps ``cfg`` (the resolved ``conf/curate.yaml``) enables, in order."""
    seed = int(cfg["seed"])
    embed_cfg = dict(cfg["embed"])
    pretrain = bool(cfg["pretrain"]["enabled"])
    if pretrain and is_embeddings_input(cfg["input"]):
        raise ValueError("pretrain.enabled=true trains on images; input.format=embeddings has none")
    steps: list[Step] = []
    if pretrain:
        steps.append(PretrainStep(dict(cfg["pretrain"]), dict(cfg["input"]), seed))
        embed_cfg.update(backbone="ssl", checkpoint=run.path(PRETRAIN_CHECKPOINT), image_size=None)
    preprocess = preprocess_specs(cfg["preprocess"]["stages"])
    steps.append(EmbedStep(embed_cfg, dict(cfg["input"]), preprocess, inputs=(PRETRAIN_CHECKPOINT,) * pretrain))
    dedup = bool(cfg["dedup"]["enabled"])
    if dedup:
        steps.append(DedupStep(dict(cfg["dedup"])))
    steps.append(ClusterStep(dict(cfg["kmeans"]), seed, drop_duplicates=dedup))
    steps.append(SampleStep(dict(cfg["sample"]), seed))
    if cfg["report"]["enabled"]:
        inputs = (EMBEDDINGS, *((DUPLICATES,) if dedup else ()), CLUSTERS, MANIFEST)
        steps.append(ReportStep(dict(cfg["report"]), cfg, inputs))
    return steps


def run_curate(run: RunDir, cfg: dict, *, force: bool = False) -> dict[str, Any]:
    """Run every enabled step of ``cfg`` (the resolved ``conf/curate.yaml``) in ``run``; returns counts per step."""
    return run_steps(run, curate_steps(run, cfg), force=force)
