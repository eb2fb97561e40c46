"""The challenger on real traffic: its shadow answers beside the champion's, and the promotion gate on them.

A service started with FTFLOW_SHADOW=challenger logs every request twice under one request id: the
champion's answer (role champion) and the challenger's (role challenger). `shadow_report` pairs them;
`check_shadow` lets the promotion refuse a challenger with fewer than
`registry.min_shadow_answers` such pairs and puts the report into the decision.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd

from tasks.monitoring.feedback import join_feedback
from tasks.monitoring.prediction_log import read_predictions
from tasks.platform import tracking
from tasks.registry.promote import ShadowGate

MIN_SHADOW_PARAM = "registry.min_shadow_answers"  # the challenger's training config value


@dataclass(frozen=True)
class ShadowReport:
    """Champion and challenger answers to the same requests (texts), and where feedback says who was right."""

    champion_version: str
    challenger_version: str
    answers: int  # texts answered by both
    agreement: float | None  # share of those with the same answer (label, value or entities)
    feedback_rows: int  # of those, how many have a corrected label
    champion_accuracy: float | None
    challenger_accuracy: float | None

    def summary(self) -> str:
        """One line for a promotion decision's reason."""
        if not self.answers:
            return f"no shadow answers of version {self.challenger_version} beside champion {self.champion_version}"
        text = f"{self.answers} shadow answers, agreement {self.agreement:.3f}"
        if self.feedback_rows:
            text += (
                f", accuracy on {self.feedback_rows} with feedback: champion {self.champion_accuracy:.3f}, "
                f"challenger {self.challenger_accuracy:.3f}"
            )
        return text


def _answer(rows: pd.DataFrame) -> pd.Series:
    # NER rows answer with entities, others with a label or a value: compare what was answered.
    return rows["prediction"].where(rows["prediction"].notna(), rows["entities"])


def shadow_report(
    name: str, champion_version: str, challenger_version: str, location: str | None = None
) -> ShadowReport:
    """Agreement of the challenger's shadow answers with the champion's, and both accuracies where feedback exists."""
    logged = read_predictions(model_name=name, location=location)
    champion = logged[(logged["role"] == "champion") & (logged["model_version"] == str(champion_version))]
    shadow = logged[(logged["role"] == "challenger") & (logged["model_version"] == str(challenger_version))]
    both = (
        champion.drop_duplicates("request_id")
        .assign(champion_answer=_answer)
        .merge(
            shadow.drop_duplicates("request_id").assign(challenger_answer=_answer)[["request_id", "challenger_answer"]],
            on="request_id",
        )
    )
    agreement = float((both["champion_answer"] == both["challenger_answer"]).mean()) if len(both) else None
    judged = join_feedback(both, location) if len(both) else both.assign(label=[])
    labelled = judged["probabilities"].notna().all()  # accuracy is for class answers; values and entities: None

    def accuracy(column: str) -> float | None:
        return float((judged[column] == judged["label"].astype(str)).mean()) if len(judged) and labelled else None

    return ShadowReport(
        str(champion_version),
        str(challenger_version),
        len(both),
        agreement,
        len(judged),
        accuracy("champion_answer"),
        accuracy("challenger_answer"),
    )


def min_shadow_answers(challenger_run_id: str) -> int:
    """registry.min_shadow_answers of the challenger's training config (0, no minimum, when absent)."""
    try:
        return int(float(tracking.run_params(challenger_run_id).get(MIN_SHADOW_PARAM, 0)))
    except (ValueError, TypeError):
        return 0


def check_shadow(name: str, champion: dict | None, challenger: dict) -> ShadowGate:
    """The shadow report of `challenger` beside `champion`; a refusal when fewer answers than the config asks."""
    needed = min_shadow_answers(challenger["run_id"])
    if champion is None or champion["version"] == challenger["version"]:
        return ShadowGate()  # nothing served to shadow yet, or nothing to compare
    try:
        report = shadow_report(name, champion["version"], challenger["version"])
    except Exception as e:  # an unreadable log blocks only a gate that needs it
        return ShadowGate(refusal=f"the prediction log could not be read ({type(e).__name__}: {e})" if needed else None)
    if report.answers < needed:
        return ShadowGate(
            asdict(report),
            refusal=(
                f"only {report.answers} shadow answers of version {challenger['version']} beside champion "
                f"{champion['version']}, registry.min_shadow_answers is {needed}: serve with FTFLOW_SHADOW=challenger "
                f"until the challenger has answered enough real requests"
            ),
        )
    return ShadowGate(asdict(report), note=f"shadow: {report.summary()}" if report.answers else None)
