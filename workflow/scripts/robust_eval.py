def main(smk):
    from pathlib import Path

    from clcore.methods.ser import write_robust_eval
    from clcore.pipeline import gpu_job

    run_dir = Path(smk.input.run).parent  # train kept final.pt beside run.json (PIPELINE.keeps_final)
    settings = smk.params.settings  # the block's robust_eval settings (schema defaults filled in)
    with gpu_job(smk, f"robustness evaluation of {run_dir} (rule robust_eval; batch_size in the experiment's "
                      "robust_eval settings)") as (device, _):
        write_robust_eval(run_dir, smk.output[0], prepared_dir=smk.params.prepared_dir, device=device,
                          eps=tuple(float(e) for e in settings["eps"]), n_per_class=int(settings["n_per_class"]),
                          sal_grad=tuple(settings["sal_grad"]), batch_size=int(settings["batch_size"]),
                          conflict=settings["conflict"])


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
