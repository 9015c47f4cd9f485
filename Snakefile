# Reproduction pipeline for brain-inspired continual learning: datasets -> runs -> tables and figures.
# Default: the embedded offline config. Full grid: `snakemake --cores all --configfile config/paper.yaml`.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


from clcore.pipeline import experiment_blocks

config["experiments"] = experiment_blocks(config)  # with the blocks of the config's `experiment_files`
validate(config, "workflow/schemas/config.schema.yaml")


report: "workflow/report/workflow.rst"


wildcard_constraints:
    benchmark=r"[a-z0-9-]+",
    run=r"[a-z0-9_]+(-task)?(-h[0-9a-f]{8})?",
    buffer=r"\d+",
    seed=r"\d+",
    prepared=r"[a-z0-9-]+(@[0-9]+x[0-9]+)?",
    raw=r"[a-z0-9-]+",
    source=r"[a-z0-9-]+(@[0-9]+x[0-9]+)?",
    kind=r"[a-z_]+",
    experiment=r"[a-z0-9_]+",


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/collect.smk"
# the pretrained inputs and extra evaluations of the method families
include: "rules/ser.smk"
include: "rules/wscl.smk"
include: "rules/akr.smk"
include: "rules/ar1.smk"
include: "rules/bir.smk"


localrules:
    all,
    fetch_dataset,
    prepare_dataset,
    collect,
    tables,
    experiment_table,
    figures,
    experiment_figure,
    robustness_table,
    wscl_report,
    akr_report,
    ar1_report,
    fetch_mobilenet_w1,


rule all:
    default_target: True
    input:
        TABLES / "runs.parquet",
        TABLES / "accuracy.parquet",
        TABLES / "summary.md",
        TABLES / "summary.csv",
        PIPELINE.figure_targets(FIGURE_DIR),
        PIPELINE.experiment_table_targets(TABLES),
        PIPELINE.robustness_table_targets(TABLES),
        PIPELINE.experiment_figure_targets(FIGURE_DIR),
        WSCL_REPORTS,
        AKR_REPORTS,
        AR1_REPORTS,
