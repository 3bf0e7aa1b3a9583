"""Stage `sample`: RSNA long CSV -> wide table -> ~`sample.per_label` images per label."""

from __future__ import annotations

import logging

from ich.files import write_csv, write_json
from ich.labels import LABELS, parse_long_csv, sample_balanced
from ich.params import DataParams, SampleParams, load_params, section
from ich.runner import StageError, run_stage

SAMPLED = "data/sampled.csv"
REJECTS = "data/sample_rejects.csv"
METRICS = "metrics/sample.json"

logger = logging.getLogger("ich")


def main() -> None:
    params = load_params()
    data = section(params, "data", DataParams)
    sample = section(params, "sample", SampleParams)
    parsed = parse_long_csv(data.labels_csv)
    if parsed.wide.empty:
        raise StageError(
            f"No usable image in {data.labels_csv!r} ({len(parsed.rejected)} problem rows, see {REJECTS}). "
            "Check `data.labels_csv`."
        )
    sampled = sample_balanced(parsed.wide, sample.per_label, sample.seed)
    write_csv(sampled, SAMPLED)
    write_csv(parsed.rejected, REJECTS)
    metrics = {**parsed.counts, "images_sampled": len(sampled)}
    metrics.update({f"sampled_{label}": int(sampled[label].sum()) for label in LABELS})
    write_json(metrics, METRICS)
    if len(parsed.rejected):
        logger.warning("sample: %d problem rows/images reported in %s", len(parsed.rejected), REJECTS)
    logger.info("sample: %d of %d valid images sampled -> %s", len(sampled), len(parsed.wide), SAMPLED)


if __name__ == "__main__":
    run_stage(main)
