# Datasets: prepared once into the uniform uint8 format (clcore prepare). Local rule: downloads
# happen on the submit host, never on compute nodes, and never while the DAG is parsed.


rule prepare_dataset:
    output:
        PREPARED / "{prepared}" / "meta.json",
    params:
        prepared_dir=PREPARED,
        raw_dir=config["paths"]["raw"],
        sources="config/datasets.yaml",  # mirrors and md5 of the downloaded datasets
        expected_hashes="config/reference/embedded_hashes.json",  # a mismatch warns in the log
    log:
        "logs/prepare_dataset/{prepared}.log",
    script:
        "../workflow/scripts/prepare.py"
