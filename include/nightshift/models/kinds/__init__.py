"""Model kinds: one module each, named in ``config.MODEL_KINDS``.

A kind's module holds ``SPEC`` (its YAML keys, a :class:`~nightshift.config.pipeline.ModelSpec`) and
``KIND`` (a :class:`~nightshift.models.kinds.base.ModelKind`: how it trains, loads, scores and is
logged to MLflow). The night asks the kind; nothing else in nightshift asks which kind a model
is. A new kind is a new module here and one line in ``MODEL_KINDS``.

Parsing a pipeline imports its kinds' modules (and the DAG file parses every pipeline), so
a kind module imports pandas, numpy and its libraries inside the methods that use them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from nightshift.config.pipeline import MODEL_KINDS, kind_module
from nightshift.models.kinds.base import ModelKind, Scorer
from nightshift.models.safe_models import UnsafeModel, is_pickle

if TYPE_CHECKING:
    from nightshift.data.features import FeatureStats


def kind_of(kind: str) -> ModelKind:
    """Return the class of model kind ``kind``; a kind not in the table is a ValueError."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; known: {sorted(MODEL_KINDS)}")
    found: ModelKind = kind_module(kind).KIND
    return found


def is_learned(kind: str) -> bool:
    """Whether models of ``kind`` learn (compete for champion, are registered), unlike the
    baseline, which only keeps them honest."""
    return kind_of(kind).learned


def trusted_types() -> list[str]:
    """Every scikit-learn type a kind saves with skops: what loading a registered model of
    the scikit-learn flavour may build, and nothing more."""
    return sorted({t for kind in MODEL_KINDS for t in kind_of(kind).trusted_types})


def load_scorer(
    kind: str, payload: bytes, stats: FeatureStats, task: str, origin: str = "<bytes>"
) -> Scorer:
    """Return the model in ``payload`` (the file at ``origin``) ready to score, loaded by its
    kind without running code: a pickle, above all, is refused with the file named."""
    if is_pickle(payload):
        raise UnsafeModel(
            f"{origin}: refusing to load a pickle where a {kind} model is expected; "
            "models load only from XGBoost UBJ/JSON, nightshift's JSON or skops"
        )
    return kind_of(kind).load(payload, stats, task, origin)


def load_flavour(flavours: dict[str, Any], local: Path, uri: str) -> Any:
    """Return the registered model in the MLflow model folder ``local`` (its MLmodel's
    ``flavours``), loaded safely by the first kind whose flavour it has."""
    for kind in MODEL_KINDS:
        found = kind_of(kind)
        if found.flavour is not None and found.flavour in flavours:
            return found.load_registered(local, flavours[found.flavour], uri)
    raise UnsafeModel(f"{uri}: no flavour a model kind loads ({sorted(flavours)})")
