"""The model to fine-tune: the pretrained body with a fresh head sized for the task."""

from __future__ import annotations

from tasks.config import PipelineConfig
from tasks.kinds import kind_of


def build_model(cfg: PipelineConfig, labels: list[str] | None):
    """Load the pretrained body with a fresh head sized for the task."""
    # heavy (transformers; pandas via tasks.modelling.encode): loaded when this runs, so importing tasks.modelling.model stays light
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    from tasks.modelling.encode import ModelSourceError, resolve_model_path

    kind = kind_of(cfg.data.task)
    if not (kind.predicts_value or kind.is_token_level or kind.is_single_label or kind.is_multi_label):
        raise kind.unsupported("model head")
    path = resolve_model_path(cfg.model.name)
    kwargs: dict = {"revision": cfg.model.revision, "num_labels": kind.num_labels(labels)}
    if kind.has_labels:
        assert labels is not None, "num_labels refused a missing label set"
        kwargs.update(id2label=dict(enumerate(labels)), label2id={name: i for i, name in enumerate(labels)})
    if kind.problem_type is not None:  # NER leaves it unset: transformers' token heads have none
        kwargs["problem_type"] = kind.problem_type
    cls = AutoModelForTokenClassification if kind.is_token_level else AutoModelForSequenceClassification
    try:
        model = cls.from_pretrained(path, **kwargs)
    except OSError as e:
        raise ModelSourceError(f"cannot load model '{cfg.model.name}': {e}") from None
    limit = position_limit(model.config)
    if limit and cfg.model.max_length != "auto" and cfg.model.max_length > limit:
        # Caught here, not as an index error in a batch of long texts or in the ONNX parity check.
        raise ValueError(
            f"model.max_length = {cfg.model.max_length} is more than model '{cfg.model.name}' takes "
            f"({limit} positions); set model.max_length to {limit} or less"
        )
    return model


def position_limit(config) -> int | None:
    """Longest input the model's position embeddings allow (RoBERTa-style models reserve two).

    None when positions are relative only (DeBERTa v2/v3): those take longer inputs.
    """
    positions = getattr(config, "max_position_embeddings", None)
    if not positions or getattr(config, "position_biased_input", True) is False:
        return None
    return positions - (2 if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert") else 0)
