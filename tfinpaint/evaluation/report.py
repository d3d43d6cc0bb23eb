"""The evaluation report: a Markdown table per hole-ratio bin (``results.md``) and the full JSON
(``results.json``)."""
from __future__ import annotations

import json
import math
import os

RESULTS_JSON = "results.json"
RESULTS_MARKDOWN = "results.md"


def _number(value: float, digits: int) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else str(value)


def markdown_table(results: dict) -> str:
    """Rows grouped by hole-ratio bin, then "all"; L1 and L2 as percentages of the [0, 1] range."""
    has_fid = any("fid" in table["all"] for table in results["methods"].values())
    columns = ["hole ratio", "method", "L1 ×100 ↓", "L2 ×100 ↓", "PSNR (dB) ↑", "SSIM ↑"]
    columns += ["FID ↓"] if has_fid else []
    columns += ["masks"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for key in results["bins"] + ["all"]:
        for method, table in results["methods"].items():
            if key not in table:
                continue
            row = table[key]
            cells = [key, method, _number(100 * row["l1"], 2), _number(100 * row["l2"], 3),
                     _number(row["psnr"], 2), _number(row["ssim"], 4)]
            if has_fid:
                cells.append(_number(row["fid"], 2) if "fid" in row else "")
            cells.append(str(row["count"]))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(results: dict) -> str:
    """The table with a line saying what was evaluated on what, and the notes (omitted metrics, skipped photos)."""
    mask_set = results["mask_set"]
    images = len({entry["image"] for entry in results["entries"]})
    origin = (f"{mask_set['mask_type']} masks, seed {mask_set['seed']}" if mask_set.get("mask_type")
              else "masks from files")
    heading = (f"Model `{results['model']}` ({results['checkpoint']}), {len(results['entries'])} masks on "
               f"{images} images at {results['size']}x{results['size']} ({origin}; mask set in "
               f"{mask_set['dir']}).")
    lines = [heading, "", markdown_table(results), ""]
    lines += [f"- {note}" for note in results["notes"]]
    skipped = results.get("skipped") or []
    if skipped:
        lines.append(f"- {len(skipped)} photo{'s' if len(skipped) > 1 else ''} skipped: "
                     + "; ".join(f"{item['image']} ({item['reason']})" for item in skipped))
    return "\n".join(lines)


def json_ready(value):
    """Non-finite floats (the PSNR of a perfect completion is +inf) as strings: JSON has no infinity."""
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def write_results(folder: str, results: dict) -> None:
    """``results.json`` and ``results.md`` in ``folder``."""
    with open(os.path.join(folder, RESULTS_JSON), "w", encoding="utf-8") as handle:
        json.dump(json_ready(results), handle, indent=1, allow_nan=False)
        handle.write("\n")
    with open(os.path.join(folder, RESULTS_MARKDOWN), "w", encoding="utf-8") as handle:
        handle.write(markdown_report(results) + "\n")

