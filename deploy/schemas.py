"""The request schema: every rule a /predict body must keep, in one pydantic model per set of limits.

The limits (FTFLOW_MAX_BATCH, FTFLOW_MAX_CHARS) are part of the schema, so they show in the OpenAPI
document (maxItems, maxLength) and clients and fuzzers see them; `predict_request_model` builds the
model for one deployment's limits.
"""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Annotated, TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    StringConstraints,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from tasks.inference.normalize import normalize_one
from tasks.monitoring.prediction_log import REQUEST_ID_MAX, REQUEST_ID_PATTERN

# What to do about a refusal, added to pydantic's own message.
HINTS = {
    "string_unicode": "it holds a lone surrogate (such as \\ud800), which is not Unicode text; send UTF-8 text",
    "string_too_long": "longer texts are refused, not cut (the server's FTFLOW_MAX_CHARS); texts within it "
    "are truncated at the model's max_length tokens and flagged",
    "too_long": "split the batch into smaller requests (the server's FTFLOW_MAX_BATCH)",
    # A JSON list, string or number as the whole body: pydantic's message names the class, not the place.
    "model_type": 'the body must be a JSON object, such as {"text": "a fine film"}',
}


def _check_not_blank(text: str) -> str:
    if not text.strip():
        raise PydanticCustomError("blank_text", "is only whitespace; send text to classify")
    # Zero-width spaces, a BOM, NUL or line separators survive strip() but not the normaliser the model
    # reads through: such a text would be answered from nothing. Normalised only when no letter or
    # digit is seen, so an ordinary text is not normalised twice.
    if not any(ch.isalnum() for ch in text) and not normalize_one(text):
        raise PydanticCustomError(
            "blank_text", "has nothing to read once normalised (only invisible or control characters); send text"
        )
    return text


class PredictRequestRules(BaseModel):
    """The rules between fields; `predict_request_model` adds the fields with their limits."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"text": "a wonderful, moving film"},
                {"texts": ["tedious and dull", "a delight"]},
                {"text": "The cat sat.", "text_pair": "A cat was sitting."},
            ]
        },
    )

    if TYPE_CHECKING:
        # The fields, as `predict_request_model`'s subclass declares them with one deployment's limits.
        text: str | None
        texts: list[str] | None
        text_pair: str | None
        text_pairs: list[str] | None

    @model_validator(mode="after")
    def _check_shape(self):
        if (self.text is None) == (self.texts is None):
            raise _refuse("send either 'text' (one string) or 'texts' (a list of strings), exactly one of them")
        if self.text is not None and self.text_pairs is not None:
            raise _refuse("with 'text' send 'text_pair' (one string), not 'text_pairs'")
        if self.texts is not None and self.text_pair is not None:
            raise _refuse("with 'texts' send 'text_pairs' (a list), not 'text_pair'")
        if self.text_pairs is not None:
            assert self.texts is not None, "'text_pairs' without 'texts' was refused above"
            if len(self.text_pairs) != len(self.texts):
                raise _refuse(
                    f"'text_pairs' has {len(self.text_pairs)} entries but 'texts' has {len(self.texts)}; "
                    f"give one second text per text"
                )
        return self

    def batch(self) -> tuple[list[str], list[str] | None]:
        """The texts and their second texts (None for single-text requests), as lists."""
        if self.texts is not None:
            texts = self.texts
        else:
            assert self.text is not None, "_check_shape lets exactly one of 'text' and 'texts' through"
            texts = [self.text]
        pairs = self.text_pairs if self.text_pairs is not None else ([self.text_pair] if self.text_pair else None)
        return texts, pairs

    @property
    def pair_field(self) -> str:
        """The field that holds second texts in this request's shape."""
        return "text_pairs" if self.texts is not None else "text_pair"


def _refuse(msg: str) -> PydanticCustomError:
    # A custom error type keeps the message as written (a ValueError gets "Value error, " in front).
    return PydanticCustomError("invalid_request", msg)


@functools.cache
def predict_request_model(max_batch: int, max_chars: int) -> type[PredictRequestRules]:
    """The /predict body model with these limits: one text (`text`) or a batch (`texts`), pairs optional."""
    Text = Annotated[
        str, StringConstraints(strict=True, min_length=1, max_length=max_chars), AfterValidator(_check_not_blank)
    ]
    Batch = Annotated[list[Text], Field(min_length=1, max_length=max_batch)]

    class PredictRequest(PredictRequestRules):
        """One text (`text`) or a batch (`texts`); pair models also take `text_pair` / `text_pairs`."""

        text: Text | None = Field(None, description="one text")
        texts: Batch | None = Field(None, description="a batch of texts")
        text_pair: Text | None = Field(None, description="the second text, for a pair model with `text`")
        text_pairs: Batch | None = Field(None, description="second texts, one per entry of `texts`")

    return PredictRequest


Model = TypeVar("Model", bound=BaseModel)


def parse_request(model: type[Model], body: bytes) -> Model:
    """The body as `model`, or RequestValidationError with each error's place in the body."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as e:  # not UTF-8, not JSON, a 5000-digit number, nested too deep
        reason = "nested too deep" if isinstance(e, RecursionError) else str(e)
        raise RequestValidationError(
            [
                {
                    "type": "json_invalid",
                    "loc": ("body",),
                    "msg": f"the body is not a JSON object this service can read: {reason}",
                }
            ]
        ) from None  # the reason is in the message; the parser's traceback is noise
    try:
        return model.model_validate(data)
    except ValidationError as e:
        errors = []
        for err in e.errors(include_url=False, include_input=False, include_context=False):
            hint = HINTS.get(err["type"])
            errors.append(
                {
                    "type": err["type"],
                    "loc": ("body", *err["loc"]),
                    "msg": f"{err['msg']}; {hint}" if hint else err["msg"],
                }
            )
        raise RequestValidationError(errors) from None


MAX_FEEDBACK_ITEMS = 1000
RequestId = Annotated[
    str,
    StringConstraints(strict=True, max_length=REQUEST_ID_MAX, pattern=REQUEST_ID_PATTERN),
    Field(description="the id /predict answered with (each text of a batch has its own)"),
]
# A class name for classification, a number for regression, a list of names for a multi-label model; the
# model's own labels are checked when stored.
LabelSet = Annotated[list[StrictStr], Field(max_length=1000)]
Label = Annotated[
    StrictStr | StrictInt | StrictFloat | LabelSet,
    Field(description="the correct label, value, or (multi-label) list of labels; [] for none of them"),
]


class FeedbackItem(BaseModel):
    """One corrected answer."""

    model_config = ConfigDict(extra="forbid")

    request_id: RequestId
    label: Label


class FeedbackRequest(BaseModel):
    """One correction (`request_id`, `label`) or a batch of them (`items`); stored all or nothing."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"request_id": "3f2b9c0e4d6a4b7f9e1c2d3a4b5c6d7e", "label": "positive"},
                {
                    "items": [
                        {"request_id": "3f2b9c0e4d6a4b7f9e1c2d3a4b5c6d7e-0", "label": "negative"},
                        {"request_id": "3f2b9c0e4d6a4b7f9e1c2d3a4b5c6d7e-1", "label": "positive"},
                    ]
                },
            ]
        },
    )

    request_id: RequestId | None = None
    label: Label | None = None
    items: Annotated[list[FeedbackItem], Field(min_length=1, max_length=MAX_FEEDBACK_ITEMS)] | None = None

    @model_validator(mode="after")
    def _check_shape(self):
        single = self.request_id is not None or self.label is not None
        if single == (self.items is not None):
            raise _refuse("send either 'request_id' with 'label' (one correction) or 'items' (a list of them)")
        if single and (self.request_id is None or self.label is None):
            raise _refuse("send 'request_id' and 'label' together")
        return self

    def as_items(self) -> list[dict]:
        """The corrections as [{request_id, label}]."""
        if self.items is not None:
            return [item.model_dump() for item in self.items]
        return [{"request_id": self.request_id, "label": self.label}]


# --- answers: what /predict returns, one model per answer shape (documented in /openapi.json) -------------


class AnswerBase(BaseModel):
    """What every answer carries."""

    truncated: bool = Field(description="the input was longer than the model's max_length and was cut")
    request_id: str = Field(description="this text's id, for /feedback (a batch's texts get <id>-<index>)")


class ClassAnswer(AnswerBase):
    """classification, pair_classification: one label, under the bundle's temperature and threshold."""

    label: str
    score: float = Field(description="the chosen label's calibrated probability")
    scores: dict[str, float] = Field(description="every label's calibrated probability")


class LabelSetAnswer(AnswerBase):
    """multi_label: every label whose calibrated probability reaches its own threshold (none is an answer)."""

    labels: list[str]
    scores: dict[str, float] = Field(description="every label's calibrated probability")


class ValueAnswer(AnswerBase):
    """regression: one number."""

    value: float


class Entity(BaseModel):
    """One entity: its type, character span in the text, the text, and the mean probability of its words."""

    type: str
    start: int
    end: int
    text: str
    score: float


class EntitiesAnswer(AnswerBase):
    """ner: the entities found, as spans of the text sent."""

    entities: list[Entity]


class AnsweringModel(BaseModel):
    name: str | None
    version: str
    role: str = Field(description="champion, or canary when the canary answered")


class PredictResponse(BaseModel):
    """The body of a /predict answer: one answer per text, in the order sent."""

    request_id: str
    client_request_id: str | None = Field(description="the X-Request-ID the client sent, kept for correlation")
    model: AnsweringModel
    predictions: list[ClassAnswer | LabelSetAnswer | ValueAnswer | EntitiesAnswer]
