"""The pipeline's logic, for rules/*.smk: the run table every target derives from, the per-run look-ups the
rules ask for, and the preamble of every GPU job. Everything here is plain Python over the validated config,
so the tests exercise it without Snakemake (docs/protocol.md#hyperparameter-resolution for run identity).

A run is (benchmark, run name, buffer size, seed); the run name is the method, `-task` for a task-IL block
and `-h<hash>` for hyperparameter overrides. Runs shared by several experiment blocks appear once.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError
from .hparams import resolve, run_name
from .methods import family_of, get_method
from .report.figures import EXPERIMENT_FIGURES, FIGURES, SALIENCY_FIGURE
from .results import run_dir
from .scenarios import StreamSpec, get_benchmark


@dataclass
class Run:
    benchmark: str
    name: str           # the run name: <method>[-task][-h<hash>]
    buffer_size: int
    seed: int
    method: str
    hparams: dict       # resolved and type-checked
    experiments: list[str] = field(default_factory=list)  # ids of the blocks that ask for it


def scenario_override(exp: dict, method: str) -> dict:
    """{"scenario": "task"} for a task-IL block; only methods that train differently per scenario may be in one."""
    if exp.get("scenario", "class") == "class":
        return {}
    cls, _ = get_method(method)
    if "scenario" not in {f.name for f in dataclasses.fields(cls.Hparams)}:
        raise InputError(f"experiment '{exp['id']}' (scenario: task): method '{method}' trains one head for both "
                         f"settings; list it in a class block, whose table reports its task-IL accuracy too")
    return {"scenario": exp["scenario"]}


def experiment_blocks(config: dict) -> list[dict]:
    """The config's experiment blocks, then those of its `experiment_files` (YAML files with an `experiments`
    list), so one config can run several studies (config/embedded/all.yaml). Blocks with `enabled: false` (those on
    data a user must obtain by hand, e.g. AKR's ImageNet-subset) are left out."""
    import yaml

    blocks = list(config.get("experiments", []))
    for path in config.get("experiment_files", []):
        blocks += (yaml.safe_load(Path(path).read_text()) or {}).get("experiments", [])
    return [block for block in blocks if block.get("enabled", True)]


def load_config(configfiles=(), base="config/config.yaml", schema="workflow/schemas/config.schema.yaml") -> dict:
    """The config Snakemake would run with `--configfile` (each file merged into `base`: dicts merge, lists
    replace), with the blocks of its `experiment_files` and the schema's defaults filled in."""
    import yaml
    from snakemake.utils import validate

    def merge(into: dict, new: dict) -> dict:
        for key, value in new.items():
            into[key] = merge(dict(into.get(key) or {}), value) if isinstance(value, dict) else value
        return into

    config: dict = {}
    for path in (base, *configfiles):
        merge(config, yaml.safe_load(Path(path).read_text()) or {})
    config["experiments"] = experiment_blocks(config)
    validate(config, schema)
    return config


class Pipeline:
    """The runs of a validated config (Snakefile: `validate(config, schema)` fills the defaults). Unknown
    benchmark, method or hyperparameter names, and values of the wrong type, fail here, before any job starts."""

    def __init__(self, config: dict):
        self.config = config
        self.results = Path(config["paths"]["results"])
        self.blocks = {exp["id"]: exp for exp in config["experiments"]}
        if not self.blocks:
            raise InputError("the config has no experiment blocks: give `experiments` or `experiment_files`")
        if len(self.blocks) < len(config["experiments"]):
            ids = [exp["id"] for exp in config["experiments"]]
            raise InputError(f"experiment ids must be unique; repeated: {sorted({i for i in ids if ids.count(i) > 1})}")
        self.runs: dict[tuple, Run] = {}
        for exp in config["experiments"]:
            for benchmark in exp["benchmarks"]:
                get_benchmark(benchmark)
                for method in exp["methods"]:
                    self._add_runs(exp, benchmark, method)
            exp["pairs"] = [self._pair_runs(exp["id"], pair) for pair in exp.get("pairs", [])]

    def _pair_runs(self, experiment: str, pair: list[str]) -> list[str]:
        """A declared [method, base] pair as run names: a method with one run name in the block (e.g. `er`, trained
        with the block's overrides as er-h<hash>) stands for it."""
        by_method: dict[str, set] = {}
        for run in self.block_runs(experiment):
            by_method.setdefault(run.method, set()).add(run.name)
        names = set().union(*by_method.values())
        resolved = [side if side in names or len(by_method.get(side, ())) != 1 else next(iter(by_method[side]))
                    for side in pair]
        if not set(resolved) <= names:
            raise InputError(f"experiment '{experiment}': pair {pair} names runs the block does not have "
                             f"(its runs: {', '.join(sorted(names))})")
        return resolved

    def _add_runs(self, exp: dict, benchmark: str, method: str) -> None:
        cls, _ = get_method(method)
        overrides = {**scenario_override(exp, method), **exp.get("overrides", {}).get(method, {})}
        buffers = exp.get("buffers", []) if cls.uses_buffer else [0]
        if not buffers:
            raise InputError(f"experiment '{exp['id']}': method '{method}' needs a buffer, but 'buffers' is empty")
        for buffer in buffers:
            hparams = resolve(method, benchmark, buffer, overrides, self.config["paths"]["hparams"],
                              f"experiment '{exp['id']}' overrides")
            name = run_name(method, overrides)
            for seed in exp["seeds"]:
                run = self.runs.setdefault((benchmark, name, buffer, seed),
                                           Run(benchmark, name, buffer, seed, method, hparams))
                run.experiments.append(exp["id"])

    # -- runs -------------------------------------------------------------------------------------------
    def run(self, benchmark: str, name: str, buffer_size, seed) -> Run:
        return self.runs[(benchmark, name, int(buffer_size), int(seed))]

    def run_dir(self, run: Run) -> Path:
        return run_dir(self.results, run.benchmark, run.name, run.buffer_size, run.seed)

    def run_files(self, filename: str, runs=None) -> list[str]:
        return [str(self.run_dir(run) / filename) for run in (self.runs.values() if runs is None else runs)]

    def benchmarks(self) -> list[str]:
        return sorted({run.benchmark for run in self.runs.values()})

    def benchmarks_using(self, prepared: str) -> list[str]:
        return [b for b in self.benchmarks() if get_benchmark(b).prepared == prepared]

    def expected_runs(self) -> list[dict]:
        """What the config asked for, so tables show missing runs as missing."""
        counts: dict[tuple, int] = {}
        for run in self.runs.values():
            key = (run.benchmark, run.name, run.buffer_size)
            counts[key] = counts.get(key, 0) + 1
        return [dict(benchmark=b, run_name=n, buffer_size=buf, n_seeds_expected=c) for (b, n, buf), c in counts.items()]

    def prepared_inputs(self, run: Run) -> list[Path]:
        """The meta.json of every prepared dataset a run loads: its benchmark's and its family's extras."""
        family = family_of(run.method)
        names = [get_benchmark(run.benchmark).prepared, *family.datasets(run.method, run.hparams, run.benchmark)]
        return [Path(self.config["paths"]["prepared"]) / name / "meta.json" for name in dict.fromkeys(names)]

    def artefact_inputs(self, run: Run) -> dict[str, Path]:
        """The pretrained inputs a run needs, by artefact name, as its method's family names them."""
        paths = family_of(run.method).artefacts(run.method, run.hparams, run.benchmark, self.config)
        return {name: self.results / path for name, path in paths.items()}

    # -- experiment blocks ------------------------------------------------------------------------------
    def block(self, experiment: str) -> dict:
        return self.blocks[experiment]

    def block_runs(self, experiment: str) -> list[Run]:
        return [run for run in self.runs.values() if experiment in run.experiments]

    def block_rows(self, experiment: str) -> list[dict]:
        """The (benchmark, method, run_name, buffer_size, seeds, n_seeds_expected) a block's table asks for."""
        seeds: dict[tuple, list[int]] = {}
        for run in self.block_runs(experiment):
            seeds.setdefault((run.benchmark, run.method, run.name, run.buffer_size), []).append(run.seed)
        return [dict(benchmark=b, method=m, run_name=n, buffer_size=buf, seeds=s, n_seeds_expected=len(s))
                for (b, m, n, buf), s in seeds.items()]

    def block_title(self, experiment: str) -> str:
        return self.blocks[experiment].get("title", experiment)

    def block_figures(self, experiment: str) -> list[str]:
        """The papers' plots of a block, its extra `figures`, and SER's Fig. 1 where a method logs saliency."""
        saliency = any("sal" in get_method(run.method)[0].stream_fields for run in self.block_runs(experiment))
        return [*EXPERIMENT_FIGURES, *self.blocks[experiment]["figures"], *([SALIENCY_FIGURE] if saliency else [])]

    def figure_options(self, experiment: str) -> dict:
        """How a block's figures read its runs: the accuracy of the scenario it trained for, its ± over seeds,
        and the chance level of each benchmark (for the BI-R bars)."""
        exp = self.blocks[experiment]
        setting = "task_il" if exp["scenario"] == "task" else "class_il"
        chance = {b: 100.0 / (get_benchmark(b).classes_per_task if setting == "task_il" else get_benchmark(b).n_classes)
                  for b in exp["benchmarks"]}
        return {"setting": setting, "spread": exp["spread"], "chance": chance}

    # -- targets ----------------------------------------------------------------------------------------
    # A stream's accuracy is one number per incremental batch, not a task matrix: its tables and figure are the AR1
    # report's (rules/ar1.smk), not the per-benchmark figures and experiment tables below.
    def stream_blocks(self) -> list[str]:
        return [e for e, exp in self.blocks.items()
                if all(isinstance(get_benchmark(b), StreamSpec) for b in exp["benchmarks"])]

    def task_blocks(self) -> list[str]:
        return [e for e in self.blocks if e not in self.stream_blocks()]

    def figure_targets(self, figure_dir) -> list[Path]:
        return [Path(figure_dir) / f"{b}_{kind}.{ext}" for b in self.benchmarks()
                if not isinstance(get_benchmark(b), StreamSpec) for kind in FIGURES for ext in ("png", "pdf")]

    def experiment_table_targets(self, tables_dir) -> list[Path]:
        return [Path(tables_dir) / "experiments" / f"{e}.{ext}" for e in self.task_blocks()
                for ext in ("md", "tex", "csv")]

    def experiment_figure_targets(self, figure_dir) -> list[Path]:
        return [Path(figure_dir) / "experiments" / f"{e}_{kind}.{ext}"
                for e in self.task_blocks() for kind in self.block_figures(e) for ext in ("png", "pdf")]

    def family_blocks(self, family: str) -> list[str]:
        """The blocks with a method of `family` (WSCL's report: rules/wscl.smk)."""
        return [e for e in self.blocks if any(family_of(r.method).name == family for r in self.block_runs(e))]

    # -- SER's robustness studies (blocks with `robust_eval:`) --------------------------------------------
    def robust_blocks(self) -> list[str]:
        return [e for e, exp in self.blocks.items() if "robust_eval" in exp]

    def robust_settings(self, run: Run) -> dict:
        """The robust_eval settings of a run (those of the first robustness block that holds it), and whether its
        rows include the conflict test: every run of a study with a spurious benchmark, so recovery can pair them."""
        blocks = [e for e in self.robust_blocks() if e in run.experiments]
        conflict = any(get_benchmark(b).spurious_fraction > 0 for e in blocks for b in self.blocks[e]["benchmarks"])
        return {**self.blocks[blocks[0]]["robust_eval"], "conflict": conflict or None}

    def keeps_final(self, run: Run) -> bool:
        """Runs of a robustness block keep their trained weights (final.pt) for rule robust_eval."""
        return any(e in run.experiments for e in self.robust_blocks())

    def robustness_table_targets(self, tables_dir) -> list[Path]:
        return [Path(tables_dir) / "robustness" / f"{e}.{ext}" for e in self.robust_blocks() for ext in ("md", "csv")]


@contextlib.contextmanager
def job(smk):
    """The preamble of every rule's script: its output and traceback go to the job's log, and clcore's errors
    end the job with their one-line message on stderr and their exit code (clcore.errors)."""
    from .errors import exit_on_error
    from .io import redirect_output

    with exit_on_error(), redirect_output(smk.log[0]):
        yield


@contextlib.contextmanager
def gpu_job(smk, what: str, out_dir=None, n_tasks: int | None = None):
    """`job`, plus: a GPU out-of-memory error says what to change (clcore.errors.GpuOutOfMemoryError), and a GPU
    slot is claimed before CUDA starts (clcore.device). Yields (device, slot)."""
    import torch

    from .device import claim_device
    from .errors import gpu_oom_as_error

    with job(smk), gpu_oom_as_error(what, out_dir, n_tasks):
        device, slot = claim_device(smk.params.device, smk.params.gpu)
        torch.set_num_threads(smk.threads)
        yield device, slot
