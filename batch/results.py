"""Results export: JSON (every item), CSV (one row per item), and a summary (verdict counts,
defect rate, per-class counts, timings) as JSON and as a self-contained HTML report with an
SVG bar chart (no plotting library on the serving side)."""

from __future__ import annotations

import csv
import html
import io
import json
from collections import Counter
from collections.abc import Sequence

from pcb import taxonomy
from store.models import BatchItem

CSV_FIELDS = ["seq", "name", "state", "verdict", "verdict_label", "confidence", "defects", "classes",
              "output", "duration_ms", "attempts", "worker", "error"]


def item_dict(it: BatchItem) -> dict:
    return {"id": it.id, "seq": it.seq, "name": it.name, "state": it.state, "attempts": it.attempts,
            "worker": it.worker, "duration_ms": None if it.duration_ms is None else round(it.duration_ms, 2),
            "finished_at": it.finished_at.isoformat() + "Z" if it.finished_at else None,
            "result": it.result, "error": it.error}


def to_json(progress: dict, items: Sequence[BatchItem]) -> str:
    return json.dumps({"job": progress, "summary": summary(progress, items),
                       "items": [item_dict(it) for it in items]}, ensure_ascii=False, indent=1)


def _cell(value):
    """A cell a spreadsheet will not run: text starting with = + - @ (or a tab / CR that some
    programs strip first) gets a leading apostrophe (CSV injection)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def to_csv(items: Sequence[BatchItem]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, CSV_FIELDS)
    w.writeheader()
    for it in items:
        r = it.result or {}
        defects = r.get("defects") or []
        row = {"seq": it.seq, "name": it.name, "state": it.state, "verdict": r.get("verdict", ""),
               "verdict_label": r.get("verdict_label", ""), "confidence": r.get("confidence", ""),
               "defects": len(defects), "classes": ";".join(sorted({d["class"] for d in defects})),
               "output": r.get("output", ""),
               "duration_ms": "" if it.duration_ms is None else round(it.duration_ms, 2),
               "attempts": it.attempts, "worker": it.worker or "", "error": it.error or ""}
        w.writerow({k: _cell(v) for k, v in row.items()})
    return buf.getvalue()


def summary(progress: dict, items: Sequence[BatchItem]) -> dict:
    done = [it for it in items if it.state == "completed" and it.result]
    answers = [it.result for it in done if it.result]
    verdicts = Counter(a.get("verdict") for a in answers if "verdict" in a)
    classes = Counter(d["class"] for a in answers for d in a.get("defects", []))
    errors = Counter((it.error or "").split(":", 1)[0] for it in items if it.state == "failed")
    times = sorted(it.duration_ms for it in done if it.duration_ms is not None)
    ok = taxonomy.load().ok.name  # every other verdict is a defect
    defective = sum(n for v, n in verdicts.items() if v != ok)

    def pct(q: float) -> float | None:
        return round(times[min(len(times) - 1, int(q * len(times)))], 2) if times else None

    return {"items": progress["total"], "counts": progress["counts"],
            "verdicts": dict(verdicts), "defect_rate": round(defective / len(done), 4) if done else None,
            "classes": dict(classes.most_common()), "failure_reasons": dict(errors),
            "faces": sum(a.get("faces", 0) for a in answers),
            "timings": {"elapsed_s": progress["elapsed_s"], "items_per_s": progress["items_per_s"],
                        "item_ms_p50": pct(0.5), "item_ms_p95": pct(0.95)}}


def _bars(title: str, counts: dict, labels: dict | None = None) -> str:
    if not counts:
        return f"<h3>{html.escape(title)}</h3><p>none</p>"
    top = max(counts.values())
    rows = []
    for i, (k, v) in enumerate(counts.items()):
        w = 300 * v / top
        label = html.escape(f"{k} {labels.get(k, '')}".strip() if labels else str(k))
        rows.append(f'<text x="0" y="{i * 22 + 15}">{label}</text>'
                    f'<rect x="230" y="{i * 22 + 3}" width="{w:.0f}" height="16" fill="#3b7dd8"/>'
                    f'<text x="{236 + w:.0f}" y="{i * 22 + 15}">{v}</text>')
    return (f"<h3>{html.escape(title)}</h3><svg xmlns='http://www.w3.org/2000/svg' width='600' "
            f"height='{len(counts) * 22 + 6}' font-family='sans-serif' font-size='13'>{''.join(rows)}</svg>")


def report_html(progress: dict, summ: dict) -> str:
    tax = taxonomy.load()
    labels = {v.name: v.label for v in tax.verdicts}
    t = summ["timings"]
    rate = "n/a" if summ["defect_rate"] is None else f"{100 * summ['defect_rate']:.1f} %"
    facts = [("job", progress["job_id"]), ("name", progress["name"]), ("kind", progress["kind"]),
             ("state", progress["state"]), ("items", summ["items"]),
             *((k, v) for k, v in summ["counts"].items()), ("defect rate", rate),
             ("elapsed", f"{t['elapsed_s']} s"), ("throughput", f"{t['items_per_s']} items/s"),
             ("item ms p50 / p95", f"{t['item_ms_p50']} / {t['item_ms_p95']}")]
    table = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts)
    return ("<!doctype html><meta charset='utf-8'><title>Batch report</title>"
            "<style>body{font-family:sans-serif;margin:2em}th{text-align:left;padding-right:1em}</style>"
            f"<h1>Batch report</h1><table>{table}</table>"
            f"{_bars('Verdicts', summ['verdicts'], labels)}{_bars('Defects per class', summ['classes'])}"
            f"{_bars('Failure reasons', summ['failure_reasons'])}")


def write_all(out_dir, progress: dict, items: Sequence[BatchItem]) -> list:
    """results.json, results.csv, summary.json and report.html into ``out_dir``."""
    from pathlib import Path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summ = summary(progress, items)
    files = {"results.json": to_json(progress, items), "results.csv": to_csv(items),
             "summary.json": json.dumps(summ, ensure_ascii=False, indent=1),
             "report.html": report_html(progress, summ)}
    for name, text in files.items():
        (out / name).write_text(text, encoding="utf-8")
    return [out / n for n in files]
