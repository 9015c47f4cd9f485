# Datasets: raw files fetched (downloads: local rules on the submit host, retried, never while the DAG
# is parsed), then prepared once into the uniform uint8 format.
from clcore.data.download import downloaded_datasets

RAW = Path(config["paths"]["raw"])
DATASET_SOURCES = "config/datasets.yaml"  # mirrors and md5 of the downloaded datasets
DOWNLOADED = set(downloaded_datasets(DATASET_SOURCES))


def raw_files_fetched(wildcards):
    """The fetch record of a downloaded dataset; manual and generated datasets have none."""
    base = wildcards.prepared.split("@")[0]
    return [RAW / base / "fetched.json"] if base in DOWNLOADED else []


rule fetch_dataset:
    output:
        RAW / "{raw}" / "fetched.json",
    params:
        raw_dir=RAW,
        sources=DATASET_SOURCES,
    retries: 3  # flaky hosts (CORe50's); a retry resumes the .part file
    log:
        "logs/fetch_dataset/{raw}.log",
    conda:
        "../workflow/envs/train.yaml"
    script:
        "../workflow/scripts/fetch.py"


rule prepare_dataset:
    input:
        raw_files_fetched,
    output:
        PREPARED / "{prepared}" / "meta.json",
    params:
        prepared_dir=PREPARED,
        raw_dir=RAW,
        sources=DATASET_SOURCES,
        expected_hashes="config/reference/embedded_hashes.json",  # a mismatch warns in the log
        needed_by=lambda wc: f"benchmark(s) {', '.join(PIPELINE.benchmarks_using(wc.prepared)) or 'the config'} (rule prepare_dataset)",
    threads: 4  # image decoding of the large image-folder datasets
    log:
        "logs/prepare_dataset/{prepared}.log",
    conda:
        "../workflow/envs/train.yaml"
    script:
        "../workflow/scripts/prepare.py"
