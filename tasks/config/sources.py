"""Where the labelled data comes from: `data.source` and each of `data.extra_sources`."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_serializer, field_validator, model_validator

from tasks.config.base import Section
from tasks.secrets import redact_url, warn_literal_credentials

SourceKind = Literal["file", "disk", "hub", "package", "url", "sql", "conll", "feedback"]
FileFormat = Literal["csv", "tsv", "jsonl", "json", "parquet"]
SHA256_PATTERN = re.compile(r"[0-9a-fA-F]{64}")


class SourceConfig(Section):
    """Where the labelled data comes from."""

    kind: SourceKind = Field("package", description="file | disk | hub | package | url | sql | conll | feedback")
    path: str | None = Field(None, description="file or folder (file, disk, conll); a file or glob of files")
    format: FileFormat | None = Field(None, description="file format; inferred from the extension when empty")
    name: str | None = Field(
        "rotten_tomatoes",
        description="packaged dataset name (package) or hub dataset id (hub), e.g. 'glue'",
    )
    config: str | None = Field(None, description="hub dataset configuration, e.g. 'mrpc'")
    revision: str | None = Field(None, description="hub dataset revision (commit or tag) to pin")
    split: str | None = Field(None, description="only this split of the source (hub, disk); all when empty")
    url: str | None = Field(
        None,
        description="HTTP(S) URL of a data file (url); put secrets in ${ENV_NAME} references, e.g. ?token=${DATA_TOKEN}",
    )
    sha256: str | None = Field(
        None, description="expected sha256 (64 hex digits) of the downloaded file (url); required there"
    )
    query: str | None = Field(None, description="SQL query returning one row per example (sql)")
    connection: str | None = Field(
        None, description="SQLAlchemy URL (sql), e.g. sqlite:///data.db or postgresql://reader:${DB_PASSWORD}@host/db"
    )
    model_name: str | None = Field(
        None, description="feedback: only rows this registered model answered; every logged model when empty"
    )
    log_location: str | None = Field(
        None,
        description="feedback: the prediction log (folder or SQLAlchemy URL); FTFLOW_PREDICTION_LOG or "
        "<mlruns>/ when empty; put a password in a ${ENV_NAME} reference, e.g. postgresql://reader:${LOG_PASSWORD}@host/db",
    )

    @field_validator("sha256")
    @classmethod
    def _check_sha256(cls, v: str | None) -> str | None:
        if v is not None and not SHA256_PATTERN.fullmatch(v):
            raise ValueError("must be 64 hex digits, as `sha256sum FILE` prints")
        return v.lower() if v else v

    @field_validator("url", "connection", "log_location")
    @classmethod
    def _warn_literal_credentials(cls, v: str | None, info) -> str | None:
        if v:
            warn_literal_credentials(f"data.source.{info.field_name}", v)
        return v

    # Every written copy of the config (config.yaml, params, train_spec.json, Prefect parameters)
    # is a dump: literal credentials are masked there; ${ENV} references stay as written.
    @field_serializer("url", "connection", "log_location")
    def _mask_credentials(self, v: str | None) -> str | None:
        return redact_url(v) if v else v

    encoding: str = Field(
        "utf-8",
        description="text encoding of csv/tsv/jsonl/json/conll files, e.g. cp1252; auto detects it "
        "(and reports what it chose); a byte-order mark always wins",
    )
    on_bad_lines: Literal["quarantine", "error"] = Field(
        "quarantine",
        description="a JSONL line that is not JSON, or a CSV/TSV row with the wrong field count: "
        "quarantine it with its line number and reason, or refuse the file",
    )

    @model_validator(mode="after")
    def _check_required(self) -> SourceConfig:
        needs = {
            "file": ["path"],
            "disk": ["path"],
            "conll": ["path"],
            "hub": ["name"],
            "package": ["name"],
            "url": ["url", "sha256"],
            "sql": ["query", "connection"],
            "feedback": [],
        }[self.kind]
        missing = [f for f in needs if not getattr(self, f)]
        if missing:
            raise ValueError(f"source kind '{self.kind}' needs {', '.join(missing)}")
        return self
