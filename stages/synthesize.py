"""Stage `synthesize`: write the synthetic head-CT set in RSNA layout to data/synthetic/."""

from __future__ import annotations

import logging

from ich.core.files import prepare_output_dir, write_json
from ich.core.params import SynthesizeParams, load_params, section
from ich.core.runner import run_stage
from ich.data.synth import generate

OUTPUT_DIR = "data/synthetic"
METRICS = "metrics/synthesize.json"


def main() -> None:
    config = section(load_params(), "synthesize", SynthesizeParams)
    output = prepare_output_dir(OUTPUT_DIR)
    counts = generate(config, output)
    write_json(counts, METRICS)
    logging.getLogger("ich").info("synthesize: %d images in %d series -> %s", counts["images"], counts["series"], output)


if __name__ == "__main__":
    run_stage(main)
