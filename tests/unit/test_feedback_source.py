"""The `feedback` data source: corrected labels of served predictions, collected and cleaned like any row."""

from __future__ import annotations

import pandas as pd

from tasks.config import load_config
from tasks.data.cache import sources_fingerprint
from tasks.data.clean import clean_data
from tasks.data.collect import collect_data
from tasks.monitoring.feedback import record_feedback
from tasks.monitoring.prediction_log import open_sink, prediction_record

ANSWER = {"label": "pos", "score": 0.6, "scores": {"pos": 0.6, "neg": 0.4}}


def test_feedback_rows_join_a_split_source_and_get_stable_hash_splits(tmp_path, monkeypatch):
    monkeypatch.setenv("FTFLOW_PREDICTION_LOG", str(tmp_path / "log"))
    words = ["good", "bad", "great", "dull", "fine", "poor", "superb", "awful"]
    base = pd.DataFrame(
        {
            "sentence": [f"{w} film number {i}" for i in range(40) for w in words[:2]],
            "verdict": ["pos", "neg"] * 40,
            "split": ["train"] * 60 + ["test"] * 10 + ["validation"] * 10,
        }
    )
    base.to_csv(tmp_path / "data.csv", index=False)
    texts = [f"served review {i}" for i in range(60)] + ["   ", "good film number 0"]
    open_sink().write(
        [prediction_record(ANSWER, t, "m", "1", 1.0, request_id=f"q{i}", keep_text=True) for i, t in enumerate(texts)]
    )
    record_feedback([{"request_id": f"q{i}", "label": "neg"} for i in range(len(texts))])

    cfg = load_config(
        None,
        [
            "data.source.kind=file",
            f"data.source.path={tmp_path / 'data.csv'}",
            "data.text_column=sentence",
            "data.label_column=verdict",
            "data.extra_sources=[{kind: feedback, model_name: m}]",
        ],
    ).data
    assert sources_fingerprint(cfg) is None  # feedback grows: the collect stage is never reused from cache
    raw = collect_data(cfg, tmp_path / "run")
    assert raw.rows == 80 + 62 and "feedback:m" in raw.source
    cleaned = clean_data(raw.path, cfg, tmp_path / "run")
    reasons = pd.read_parquet(cleaned.quarantine)["reason"].value_counts().to_dict()
    assert reasons.get("empty_text") == 1 and reasons.get("conflicting_labels", 0) >= 1
    splits = {name: pd.read_parquet(path) for name, path in cleaned.splits.items()}
    served = {name: df[df["text"].str.startswith("served")] for name, df in splits.items()}
    assert sum(len(df) for df in served.values()) == 60
    assert len(served["train"]) > 30 and len(served["test"]) + len(served["validation"]) > 0  # hashed, not "nan"

    again = clean_data(collect_data(cfg, tmp_path / "run2").path, cfg, tmp_path / "run2")
    for name in splits:  # stable: the same feedback row lands in the same split on the next retrain
        assert set(pd.read_parquet(again.splits[name])["text"]) == set(splits[name]["text"])
