"""The registered MLflow pyfunc model, logged as code (MLflow's models-from-code).

`save_serving_model` logs this file; MLflow runs it when a version loads, so nothing is unpickled.
It answers through the inference core, the path the export gate checked.
"""

from __future__ import annotations

import json

import mlflow.models
import pandas as pd
from mlflow.pyfunc import PythonModel


class OnnxTextModel(PythonModel):
    """pyfunc wrapper so `mlflow models serve -m models:/NAME@champion` answers too."""

    def load_context(self, context):
        # heavy (numpy, pyarrow via tasks.inference.predictor): loaded when this runs, so importing tasks.inference.pyfunc_model stays light
        from tasks.inference.predictor import OnnxPredictor

        self.predictor = OnnxPredictor(context.artifacts["bundle"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        """One row per input row: label and scores, value, or NER entities (nested answers as JSON text)."""
        if self.predictor.kind.is_token_level:
            texts = [" ".join(t) if not isinstance(t, str) else t for t in model_input["text"]]
        else:
            texts = [str(t) for t in model_input["text"]]
        pairs = [str(t) for t in model_input["text_pair"]] if "text_pair" in model_input else None
        answers = self.predictor.predict(texts, pairs)
        # Nested answers (scores per label, NER entities) travel as JSON text in a flat frame.
        return pd.DataFrame(
            [{k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in a.items()} for a in answers]
        )


mlflow.models.set_model(OnnxTextModel())
