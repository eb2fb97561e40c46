"""How a promotion decision reads: the CLI's lines, the Prefect artifact's markdown, the history table."""

from __future__ import annotations

from tasks.registry.decision import PROMOTED, PROMOTIONS_EXPERIMENT, REFUSED, ROLLED_BACK, PromotionDecision

# (column heading, PromotionDecision field) of the history table
HISTORY_COLUMNS = (
    ("time", "time"),
    ("action", "action"),
    ("decision", "decision"),
    ("version", "challenger_version"),
    ("champion_before", "champion_before"),
    ("champion_after", "champion_after"),
    ("metric", "metric"),
    ("challenger_score", "challenger_score"),
    ("champion_score", "champion_score"),
    ("margin", "margin"),
    ("reason", "reason"),
)


def format_value(v) -> str:
    """A cell: '-' for nothing, four decimals for a score."""
    if v is None:
        return "-"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def history_table(rows: list[PromotionDecision], markdown: bool = False) -> str:
    """The promotion log as an aligned text table (or a markdown table)."""
    heads = [h for h, _ in HISTORY_COLUMNS]
    cells = [[format_value(getattr(r, f)) for _, f in HISTORY_COLUMNS] for r in rows]
    if markdown:
        head = "| " + " | ".join(heads) + " |\n|" + "---|" * len(heads)
        return head + "".join("\n| " + " | ".join(c) + " |" for c in cells)
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(heads)]
    widths[-1] = len(heads[-1])  # the reason runs free at the end
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()  # noqa: E731
    return "\n".join([line(heads), line(["-" * w for w in widths])] + [line(c) for c in cells])


def decision_markdown(d: PromotionDecision) -> str:
    """A decision as the Prefect artifact shows it."""
    head = {PROMOTED: "promoted to champion", REFUSED: "refused", ROLLED_BACK: "rolled back"}[d.decision]
    lines = [
        f"# {d.model_name}: version {d.challenger_version} {head}",
        "",
        f"**Why:** {d.reason}",
        "",
        "| | value |",
        "|---|---|",
        f"| champion before | {format_value(d.champion_before)} |",
        f"| champion after | {format_value(d.champion_after)} |",
    ]
    if d.metric:
        lines += [
            f"| metric | {d.metric} ({'higher' if d.greater_is_better else 'lower'} is better) |",
            f"| challenger score | {format_value(d.challenger_score)} |",
            f"| champion score | {format_value(d.champion_score)} |",
            f"| margin | {format_value(d.margin)} |",
            f"| scored on | {d.eval_source} ({d.eval_rows} rows) |",
        ]
    lines += ["", f"MLflow run `{d.record_run_id}` in experiment `{PROMOTIONS_EXPERIMENT}`"]
    return "\n".join(lines)


def decision_lines(d: PromotionDecision) -> list[str]:
    """A decision as `ftflow promote` and `ftflow rollback` print it."""
    lines = [f"=== {d.action}: {d.model_name} version {d.challenger_version} {d.decision.upper()} ==="]
    if d.metric and d.challenger_score is not None:  # None: nothing was scored (already champion)
        champ = "-" if d.champion_score is None else f"{d.champion_score:.4f}"
        lines.append(
            f"{d.metric}: challenger {d.challenger_score:.4f}, champion {champ} "
            f"(margin {d.margin:g}; scored on {d.eval_rows} rows of {d.eval_source})"
        )
    return [
        *lines,
        f"champion:  {d.champion_before or '-'} -> {d.champion_after or '-'}",
        f"why:       {d.reason}",
        f"recorded:  MLflow run {d.record_run_id} in experiment '{PROMOTIONS_EXPERIMENT}'",
    ]
