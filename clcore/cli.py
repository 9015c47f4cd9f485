"""The `clcore` command line: list, hparams, prepare, fetch, train, pretrain, search, collect, bench."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click
import yaml

from .errors import CLError, gpu_oom_as_error
from .speed import PRECISIONS

EMBEDDED_HASHES = "config/reference/embedded_hashes.json"  # docs/datasets.md#reproducibility-of-generated-data


class Group(click.Group):
    """Turns clcore's errors into one clear message and the error's exit code (README "Troubleshooting");
    `--debug` shows the traceback instead."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CLError as err:
            if ctx.params.get("debug"):
                raise
            click.echo(f"error: {err}", err=True)
            sys.exit(err.exit_code)


def parse_overrides(pairs) -> dict:
    """`key=value` pairs, values parsed as YAML (so 0.1 is a float and true a bool)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"expected key=value, got {pair!r}", param_hint="--set")
        out[key] = yaml.safe_load(value)
    return out


def parse_artefacts(pairs) -> dict:
    """`name=path` pairs of pretrained inputs; the files must exist."""
    out = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not Path(path).is_file():
            raise click.BadParameter(f"expected NAME=PATH of an existing file, got {pair!r}", param_hint="--artefact")
        out[name] = path
    return out


@click.group(cls=Group)
@click.option("-v", "--verbose", is_flag=True, help="Log progress to stderr.")
@click.option("--debug", is_flag=True, help="Show the traceback of an error instead of its one-line message.")
def main(verbose, debug):
    """Reproduce brain-inspired continual-learning methods and their baselines."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(name)s: %(message)s")


@main.command("list")
@click.argument("what", type=click.Choice(["methods", "benchmarks", "datasets", "backbones"]), default="methods")
def list_(what):
    """List registered methods, benchmarks, prepared datasets or backbones."""
    from .backbones import BACKBONES
    from .data import PREPARERS
    from .methods import family_of, get_method, method_names
    from .scenarios import BENCHMARKS, StreamSpec

    if what == "methods":
        for name in method_names():
            cls, defaults = get_method(name)
            extra = f" ({', '.join(f'{k}={v}' for k, v in defaults.items())})" if defaults else ""
            click.echo(f"{name:20s} {family_of(name).name:10s} {cls.__name__}{extra}"
                       f"{'  [buffer]' if cls.uses_buffer else ''}")
    elif what == "benchmarks":
        for name, spec in BENCHMARKS.items():
            sizes = (f"a NIC stream of {spec.n_tasks} batches over {spec.n_classes}" if isinstance(spec, StreamSpec)
                     else f"{spec.first_task_classes} + {spec.n_tasks - 1} x {spec.classes_per_task}"
                     if spec.first_task_classes else f"{spec.n_tasks} x {spec.classes_per_task}")
            click.echo(f"{name:12s} {spec.prepared}: {sizes} classes, {spec.backbone} {spec.backbone_options or ''}")
    else:
        click.echo("\n".join(PREPARERS if what == "datasets" else BACKBONES))


@main.command()
@click.option("--benchmark", "-b", required=True, help="e.g. seq-shapes (see `clcore list benchmarks`).")
@click.option("--method", "-m", required=True, help="e.g. derpp (see `clcore list methods`).")
@click.option("--buffer", "buffer_size", type=int, default=0, show_default=True, help="Buffer size (0 = none).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a hyperparameter.")
@click.option("--hparams-dir", default="config/hparams", show_default=True)
def hparams(benchmark, method, buffer_size, overrides, hparams_dir):
    """The resolved hyperparameters of one run and, for each, the layer that set it."""
    from .hparams import resolve_with_sources, run_name

    overrides = parse_overrides(overrides)
    values, sources = resolve_with_sources(method, benchmark, buffer_size, overrides, hparams_dir, "--set")
    click.echo(f"{benchmark} / {run_name(method, overrides)} / buffer {buffer_size}")
    width = max(map(len, values))
    for key, value in values.items():
        click.echo(f"  {key:{width}s}  {value!r:24s}  {sources[key]}")


@main.command()
@click.argument("name")
@click.option("--prepared-dir", default="resources/prepared", show_default=True, type=click.Path(file_okay=False))
@click.option("--force", is_flag=True, help="Rebuild even if an intact copy exists.")
@click.option("--verify", is_flag=True, help="Recompute every file's sha256 against meta.json.")
@click.option("--expected-hashes", default=EMBEDDED_HASHES, show_default=True,
              help="sha256 of the generated datasets on the reference platform (ignored if absent).")
@click.option("--strict", is_flag=True, help="Fail (exit 3) instead of warning when they differ.")
@click.option("--raw-dir", default="resources/raw", show_default=True, help="Raw files go to RAW_DIR/NAME/.")
@click.option("--sources", default="config/datasets.yaml", show_default=True, help="Mirror list and checksums.")
@click.option("--no-download", is_flag=True, help="Fail (exit 2) instead of downloading a missing raw file.")
@click.option("--threads", type=int, default=1, show_default=True, help="Image decoding threads.")
def prepare(name, prepared_dir, force, verify, expected_hashes, strict, raw_dir, sources, no_download, threads):
    """Turn dataset NAME (e.g. cifar10, core50, fg-imagenet@288x384) into the uniform uint8 tensor format
    all training reads."""
    from .data import prepare as prepare_dataset

    expected = expected_hashes if Path(expected_hashes).exists() else None
    meta = prepare_dataset(name, prepared_dir, force=force, verify=verify, expected_hashes=expected, strict=strict,
                           raw_dir=raw_dir, sources=sources, download=not no_download, threads=threads)
    sizes = ", ".join(f"{split} {info['n']}" for split, info in meta["splits"].items())
    click.echo(f"{name}: {sizes} -> {Path(prepared_dir) / name}")


@main.command()
@click.argument("name")
@click.option("--raw-dir", default="resources/raw", show_default=True, help="Raw files go to RAW_DIR/NAME/.")
@click.option("--sources", default="config/datasets.yaml", show_default=True, help="Mirror list and checksums.")
@click.option("--record", type=click.Path(dir_okay=False), default=None,
              help="Also write file -> sha256 of what was fetched to this JSON file.")
def fetch(name, raw_dir, sources, record):
    """Download and verify the raw files of dataset NAME (resumable; a mismatch exits with code 3)."""
    from .data.download import fetch_all
    from .io import write_json

    hashes = fetch_all(name, raw_dir, sources)
    if record:
        write_json(record, hashes)
    click.echo(f"{name}: {len(hashes)} files verified in {Path(raw_dir) / name}")


@main.command()
@click.option("--benchmark", "-b", required=True, help="e.g. seq-shapes (see `clcore list benchmarks`).")
@click.option("--method", "-m", required=True, help="e.g. derpp (see `clcore list methods`).")
@click.option("--buffer", "buffer_size", type=int, default=0, show_default=True, help="Buffer size (0 = none).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a hyperparameter.")
@click.option("--prepared-dir", default="resources/prepared", show_default=True)
@click.option("--results-dir", default="results", show_default=True)
@click.option("--hparams-dir", default="config/hparams", show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--threads", type=int, default=None, help="CPU threads for torch.")
@click.option("--artefact", "artefacts", multiple=True, metavar="NAME=PATH",
              help="A pretrained input, e.g. bir_conv=results/pretrained/bir_conv/shapes/e20/conv.pt.")
def train(benchmark, method, buffer_size, seed, overrides, prepared_dir, results_dir, hparams_dir, device, threads,
          artefacts):
    """Run one (benchmark, method, buffer, seed) by hand, with a progress bar."""
    from .data import prepare as prepare_dataset
    from .hparams import resolve, run_name
    from .results import run_dir
    from .scenarios import get_benchmark
    from .train import run_training

    overrides = parse_overrides(overrides)
    hparams = resolve(method, benchmark, buffer_size, overrides, hparams_dir, "--set")
    prepare_dataset(get_benchmark(benchmark).prepared, prepared_dir)
    name = run_name(method, overrides)
    out = run_dir(results_dir, benchmark, name, buffer_size, seed)
    with gpu_oom_as_error(f"run {benchmark}/{name}/buf{buffer_size}/seed{seed}", out,
                          get_benchmark(benchmark).n_tasks):  # exit code 6 with what to do
        info = run_training(benchmark, method, buffer_size, seed, hparams, prepared_dir, out, run_name=name,
                            device=device, threads=threads, progress=True, artefacts=parse_artefacts(artefacts))
    s = info["summary"]
    click.echo(f"{out}: class-IL {s['class_il']['faa']:.2f}, task-IL {s['task_il']['faa']:.2f} "
               f"({info['wall_time_s']:.1f} s)")


@main.group()
def pretrain():
    """Auxiliary models that runs load (the pipeline's pretraining rules, by hand)."""


@pretrain.command("bir-conv")
@click.argument("source", default="shapes")
@click.option("--prepared-dir", default="resources/prepared", show_default=True)
@click.option("--out-dir", default=None, help="Default: results/pretrained/bir_conv/SOURCE/e<epochs>.")
@click.option("--upstream-from", default=None, type=click.Path(file_okay=False),
              help="Convert [BIR]'s C3-5x16-bn from this folder instead of training.")
@click.option("--device", default="auto", show_default=True)
def pretrain_bir_conv_command(source, prepared_dir, out_dir, upstream_from, device):
    """The BI-R family's conv layers (rule pretrain_bir_conv): SOURCE is shapes (embedded) or cifar10."""
    from .data import prepare as prepare_dataset
    from .errors import lookup
    from .methods.bir import CONV_PRETRAINING, conv_file, pretrain_conv, upstream_conv

    recipe = lookup("BI-R conv pretraining", CONV_PRETRAINING, source)
    out = Path(out_dir or (Path("results") / conv_file(source, upstream=bool(upstream_from))).parent)
    if upstream_from:
        record = upstream_conv(upstream_from, out)
    else:
        prepare_dataset(recipe.prepared, prepared_dir)
        record = pretrain_conv(recipe, prepared_dir, out, device=device)
    click.echo(f"{out / 'conv.pt'}: sha256 {record['sha256']}"
               + (f", val accuracy {record['val_accuracy']:.2f}" if "val_accuracy" in record else ""))


@main.command()
@click.option("--benchmark", "-b", required=True)
@click.option("--method", "-m", required=True)
@click.option("--grid", multiple=True, required=True, metavar="KEY=V1,V2,...",
              help="Values of one hyperparameter (YAML, e.g. si_c=1,100,10000); several --grid make a product.")
@click.option("--seeds", default="0", show_default=True, help="Comma-separated seeds.")
@click.option("--buffer", "buffer_size", type=int, default=0, show_default=True)
@click.option("--scenario", type=click.Choice(["class", "task"]), default="class", show_default=True)
@click.option("--artefact", "artefacts", multiple=True, metavar="NAME=PATH", help="A pretrained input (as in train).")
@click.option("--prepared-dir", default="resources/prepared", show_default=True)
@click.option("--hparams-dir", default="config/hparams", show_default=True)
@click.option("--out-dir", default="results/search", show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--threads", type=int, default=None)
def search(benchmark, method, grid, seeds, buffer_size, scenario, artefacts, prepared_dir, hparams_dir, out_dir,
           device, threads):
    """Grid search on a validation split (10 % of the training data, seed 100), never on the test set."""
    from .data import prepare as prepare_dataset
    from .scenarios import get_benchmark
    from .search import best_point, grid_search

    values = {}
    for item in grid:
        key, sep, listed = item.partition("=")
        if not sep or not listed:
            raise click.BadParameter(f"expected KEY=V1,V2,..., got {item!r}", param_hint="--grid")
        values[key] = [yaml.safe_load(v) for v in listed.split(",")]
    prepare_dataset(get_benchmark(benchmark).prepared, prepared_dir)
    table = grid_search(benchmark, method, values, [int(s) for s in seeds.split(",")], buffer_size, scenario,
                        hparams_dir, prepared_dir, out_dir, parse_artefacts(artefacts), device, threads)
    click.echo(table.to_string(index=False))
    click.echo(f"best: {best_point(table, list(values))}")


@main.command()
@click.option("--configfile", "configfiles", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Merged into config/config.yaml as Snakemake's --configfile does (e.g. config/paper.yaml).")
@click.option("--measured", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="runs.parquet of finished runs: their time per step, for the same benchmark and method.")
@click.option("--measure-backbones", is_flag=True,
              help="Time each benchmark's backbone step now, on random inputs of its real shape, for runs without one.")
@click.option("--device", default="auto", show_default=True)
@click.option("--threads", type=int, default=None)
@click.option("--prepared-dir", default="resources/prepared", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write every run's estimate (CSV).")
def estimate(configfiles, measured, measure_backbones, device, threads, prepared_dir, out):
    """Device-hours of a config before it runs: each run's planned steps x a measured time per step."""
    import torch

    from .estimate import estimate as estimate_runs
    from .estimate import summary_lines
    from .pipeline import load_config

    if threads:
        torch.set_num_threads(threads)
    table, notes = estimate_runs(load_config(configfiles), measured, measure_backbones, device, prepared_dir)
    if out:
        table.to_csv(out, index=False)
    click.echo("\n".join(summary_lines(table, notes)))


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out-dir", default="results/tables", show_default=True)
def collect(run_dirs, out_dir):
    """Consolidate RUN_DIRS into runs.parquet, accuracy.parquet and summary.tsv."""
    from .collect import collect as collect_runs

    out = Path(out_dir)
    runs = collect_runs(run_dirs, out / "runs.parquet", out / "accuracy.parquet", out / "summary.tsv")
    click.echo(f"{len(runs)} runs -> {out}")


@main.command()
@click.option("--benchmark", "-b", default="seq-shapes", show_default=True)
@click.option("--methods", default="sgd,er,der,derpp,er_ace", show_default=True)
@click.option("--buffer-size", type=int, default=200, show_default=True)
@click.option("--steps", type=int, default=60, show_default=True)
@click.option("--warmup", type=int, default=10, show_default=True)
@click.option("--repeats", type=int, default=5, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--threads", type=int, default=None)
@click.option("--data", type=click.Choice(["auto", "prepared", "fabricated"]), default="auto", show_default=True,
              help="auto: the prepared dataset where it exists (or clcore generates it), else noise of its shape.")
@click.option("--precision", type=click.Choice(PRECISIONS), default=None, help="Default: the benchmark's.")
@click.option("--channels-last/--no-channels-last", default=None, help="Default: the benchmark's.")
@click.option("--compile/--no-compile", "compile_", default=None, help="Default: the benchmark's.")
@click.option("--prepared-dir", default="resources/prepared", show_default=True)
@click.option("--hparams-dir", default="config/hparams", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the rows to this Parquet file.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def bench(benchmark, methods, buffer_size, steps, warmup, repeats, device, threads, data, precision, channels_last,
          compile_, prepared_dir, hparams_dir, out, as_json):
    """Images/s per method, and where a step's time goes (docs/speed.md#clcore-bench)."""
    import torch

    from .bench import BENCH_SCHEMA, run_bench
    from .results import write_table

    if threads:
        torch.set_num_threads(threads)
    speed = {k: v for k, v in (("precision", precision), ("channels_last", channels_last), ("compile", compile_))
             if v is not None}
    df = run_bench(benchmark, methods.split(","), buffer_size, steps, warmup, repeats, device, prepared_dir,
                   hparams_dir, speed, data)
    if out:
        write_table(df, BENCH_SCHEMA, out)
    if as_json:
        click.echo(df.to_json(orient="records", indent=2))
        return
    first = df.iloc[0]
    click.echo(f"{benchmark} ({first.data} data), {first.device_name}, {first.threads} threads, batch "
               f"{first.batch_size}, {first.precision}{', channels-last' if first.channels_last else ''}"
               f"{', compiled' if first.compile else ''}")
    cols = {"method": "method", "images_per_s": "img/s", "step_ms_median": "step ms", "backbone_step_ms": "bare ms",
            "overhead_ratio": "overhead", "share_passes": "passes", "share_augmentation": "aug",
            "share_sampling": "sample", "share_insertion": "insert", "share_other": "other",
            "host_reads_per_step": "reads/step", "share_evaluation": "eval/task"}
    click.echo(df[list(cols)].rename(columns=cols).to_string(index=False, float_format=lambda v: f"{v:.3f}"))


@main.command()
@click.option("--benchmark", "-b", required=True, help="The benchmark whose dataset to imitate, e.g. seq-cifar10.")
@click.option("--train-per-class", type=int, required=True)
@click.option("--test-per-class", type=int, required=True)
@click.option("--prepared-dir", default="resources/fabricated", show_default=True,
              help="Not resources/prepared: noise must never stand in for a real dataset by accident.")
@click.option("--seed", type=int, default=0, show_default=True)
def fabricate(benchmark, train_per_class, test_per_class, prepared_dir, seed):
    """Noise images of a benchmark's real shape, as a prepared dataset, for timing runs (docs/speed.md)."""
    from .bench import fabricate as fabricate_dataset
    from .scenarios import get_benchmark

    spec = get_benchmark(benchmark)
    meta = fabricate_dataset(spec, prepared_dir, train_per_class, test_per_class, seed)
    click.echo(f"{Path(prepared_dir) / spec.prepared}: {meta['splits']['train']['n']} training and "
               f"{meta['splits']['test']['n']} test images of noise")


if __name__ == "__main__":
    main()
