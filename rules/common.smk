# Declarations and wildcard adapters only: the run table and every look-up live in clcore.pipeline.
from pathlib import Path

from clcore.pipeline import Pipeline
from clcore.report.figures import EXPERIMENT_FIGURE_KINDS

PIPELINE = Pipeline(config)
PREPARED = Path(config["paths"]["prepared"])
RESULTS = PIPELINE.results
TABLES = RESULTS / "tables"
FIGURE_DIR = RESULTS / "figures"
REFERENCE_CSVS = sorted(str(p) for p in Path("config/reference").glob("*.csv"))  # published numbers
RUN_DIR = str(RESULTS / "runs" / "{benchmark}" / "{run}" / "buf{buffer}" / "seed{seed}")


def run_of(wildcards):
    """The Run of a job's {benchmark}/{run}/buf{buffer}/seed{seed} wildcards."""
    return PIPELINE.run(wildcards.benchmark, wildcards.run, wildcards.buffer, wildcards.seed)

