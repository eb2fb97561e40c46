"""The monitor's human-readable outputs: a PNG of the distributions and a self-contained HTML report."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.io import save_figure, write_text
from tasks.monitoring.drift import DriftReport, word_counts


def plot_distributions(reference: pd.DataFrame, current: pd.DataFrame, path: Path) -> Path:
    """Reference vs current: text length, confidence, and predicted-class shares, side by side."""
    # heavy (matplotlib): loaded when this runs, so importing tasks.monitoring.report stays light
    import matplotlib

    matplotlib.use("Agg")  # no display in flows and CI
    # heavy (matplotlib): loaded when this runs, so importing tasks.monitoring.report stays light
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    panels = [("words per text", "text", word_counts), ("confidence", "confidence", lambda s: s.to_numpy(float))]
    for ax, (title, col, values) in zip(axes, panels):
        for name, df in (("reference", reference), ("current", current)):
            if col in df and df[col].notna().any():
                ax.hist(values(df[col].dropna()), bins=30, alpha=0.55, density=True, label=name)
        ax.set_title(title)
        ax.legend()
    ax = axes[2]
    if "prediction" in current and current["prediction"].notna().any():
        ref = reference["prediction"].value_counts(normalize=True)
        cur = current["prediction"].value_counts(normalize=True)
        classes = sorted(set(ref.index) | set(cur.index))[:20]
        if len(classes) <= 20 and not all(_is_number(c) for c in classes):
            x = np.arange(len(classes))
            ax.bar(x - 0.2, [ref.get(c, 0) for c in classes], 0.4, label="reference")
            ax.bar(x + 0.2, [cur.get(c, 0) for c in classes], 0.4, label="current")
            ax.set_xticks(x, classes, rotation=30)
            ax.legend()
    ax.set_title("predicted class shares")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path, dpi=90)
    plt.close(fig)
    return path


def _is_number(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


def report_markdown(result: dict) -> str:
    """The monitor's verdict as markdown (Prefect artifact)."""
    lines = [
        f"# Monitor: {result['model_name']} (champion v{result.get('champion_version') or '-'})",
        "",
        f"Window {result['window_start']} → {result['window_end']}: **{result['rows']}** logged predictions; "
        f"status **{result['status']}**",
        "",
    ]
    if result.get("log_rows_lost"):
        lines += [
            f"**{result['log_rows_lost']} answers of this window were lost by the prediction log** (a full disk or "
            f"a failing database past the service's memory bound, or a full queue): /ready shows the service's count",
            "",
        ]
    if result["reasons"]:
        lines += [
            "Retrain requested: " + "; ".join(result["reasons"])
            if result["retrain"]
            else "Findings (retrain off): " + "; ".join(result["reasons"]),
            "",
        ]
    drift = result.get("drift")
    if drift:
        lines += ["| test | method | statistic | p-value | threshold | drift |", "|---|---|---|---|---|---|"]
        lines += [
            f"| {t['name']} | {t['method']} | {t['statistic']:.4g} | {t['p_value']:.3g} | {t['alpha']:.3g} | "
            f"{'**yes**' if t['p_value'] < t['alpha'] else 'no'} |"
            for t in drift["tests"]
        ]
        lines.append("")
    fb = result["feedback"]
    lines.append(
        f"Feedback: {fb['rows']} rows"
        + (f", accuracy {fb['accuracy']:.3f}" if fb.get("accuracy") is not None else "")
        + (f", MAE {fb['mae']:.4g}" if fb.get("mae") is not None else "")
    )
    if result.get("run_id"):
        lines += ["", f"MLflow run `{result['run_id']}` in experiment `{result['experiment']}`"]
    return "\n".join(lines)


def write_html_report(result: dict, drift: DriftReport | None, plot: Path | None, path: Path) -> Path:
    """One self-contained HTML page (the plot inlined): the verdict, every test, the summaries."""
    md = html.escape(report_markdown(result))
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>finetune-flow monitor</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px}.drift{color:#b00;font-weight:bold}</style></head><body>",
        f"<h1>Monitor: {html.escape(result['model_name'])}</h1>",
        f"<p>Status: <b>{html.escape(result['status'])}</b>; window {html.escape(str(result['window_start']))} "
        f"to {html.escape(str(result['window_end']))}; {result['rows']} predictions</p>",
    ]
    if result["reasons"]:
        parts.append("<ul>" + "".join(f"<li class='drift'>{html.escape(r)}</li>" for r in result["reasons"]) + "</ul>")
    if drift is not None:
        parts.append(
            "<h2>Drift tests</h2><table><tr><th>test</th><th>kind</th><th>method</th><th>statistic</th>"
            "<th>p-value</th><th>threshold</th></tr>"
        )
        for t in drift.tests:
            cls = " class='drift'" if t.drifted else ""
            parts.append(
                f"<tr{cls}><td>{t.name}</td><td>{t.kind}</td><td>{t.method}</td><td>{t.statistic:.4g}</td>"
                f"<td>{t.p_value:.3g}</td><td>{t.alpha:.3g}</td></tr>"
            )
        parts.append("</table><h2>Summaries</h2><table>")
        parts += [f"<tr><td>{html.escape(k)}</td><td>{v:.4g}</td></tr>" for k, v in sorted(drift.summaries.items())]
        parts.append("</table>")
    if plot is not None and plot.exists():
        data = base64.b64encode(plot.read_bytes()).decode()
        parts.append(f"<h2>Distributions</h2><img alt='distributions' src='data:image/png;base64,{data}'>")
    parts.append(f"<h2>Summary</h2><pre>{md}</pre></body></html>")
    write_text(path, "".join(parts))
    return path
