# Helpers only: the run table every expand() derives from, and per-run look-ups.
import dataclasses
from pathlib import Path

from clcore.report.figures import EXPERIMENT_FIGURES, FIGURES, OPTIONAL_EXPERIMENT_FIGURES, SALIENCY_FIGURE
from clcore.hparams import resolve, run_name
from clcore.methods import get_method
from clcore.scenarios import BIR_CONV_PRETRAINING, get_benchmark

PREPARED = Path(config["paths"]["prepared"])
RESULTS = Path(config["paths"]["results"])
TABLES = RESULTS / "tables"
FIGURE_DIR = RESULTS / "figures"
REFERENCE_CSVS = sorted(str(p) for p in Path("config/reference").glob("*.csv"))  # published numbers
RUN_DIR = str(RESULTS / "runs" / "{dataset}" / "{method}" / "buf{buffer}" / "seed{seed}")


def scenario_override(exp, method, cls):
    """{"scenario": "task"} for a task-IL block; only methods that train differently per scenario may be in one."""
    if exp.get("scenario", "class") == "class":
        return {}
    if "scenario" not in {f.name for f in dataclasses.fields(cls.Hparams)}:
        raise ValueError(f"experiment '{exp['id']}' (scenario: task): method '{method}' trains one head for both "
                         f"settings; list it in a class block, whose table reports its task-IL accuracy too")
    return {"scenario": exp["scenario"]}


def build_run_table(config):
    """(benchmark, run name, buffer, seed) -> run description; runs shared by experiments appear once.
    Unknown benchmark, method or hyperparameter names fail here, before any job starts."""
    runs = {}
    for exp in config["experiments"]:
        for benchmark in exp["benchmarks"]:
            get_benchmark(benchmark)
            for method in exp["methods"]:
                cls, _ = get_method(method)
                overrides = {**scenario_override(exp, method, cls), **exp.get("overrides", {}).get(method, {})}
                buffers = exp.get("buffers", []) if cls.uses_buffer else [0]
                if not buffers:
                    raise ValueError(f"experiment '{exp['id']}': method '{method}' needs a buffer, but 'buffers' is empty")
                for buffer in buffers:
                    hparams = resolve(method, benchmark, buffer, overrides, config["paths"]["hparams"])
                    for seed in exp["seeds"]:
                        key = (benchmark, run_name(method, overrides), buffer, seed)
                        run = runs.setdefault(key, {"method": method, "hparams": hparams, "experiments": []})
                        run["experiments"].append(exp["id"])
    return runs


RUNS = build_run_table(config)


def run_key(wildcards):
    return (wildcards.dataset, wildcards.method, int(wildcards.buffer), int(wildcards.seed))


def run_info(wildcards):
    return RUNS[run_key(wildcards)]


def prepared_meta(wildcards):
    return PREPARED / get_benchmark(wildcards.dataset).prepared / "meta.json"


def run_files(name):
    return [RUN_DIR.format(dataset=b, method=m, buffer=buf, seed=s) + f"/{name}" for b, m, buf, s in RUNS]


def benchmarks():
    return sorted({b for b, *_ in RUNS})


def figure_targets():
    return [FIGURE_DIR / f"{b}_{kind}.{ext}" for b in benchmarks() for kind in FIGURES for ext in ("png", "pdf")]


def expected_runs():
    """What the config asked for, so tables show missing runs as missing."""
    counts = {}
    for benchmark, name, buffer, _ in RUNS:
        counts[(benchmark, name, buffer)] = counts.get((benchmark, name, buffer), 0) + 1
    return [dict(benchmark=b, run_name=n, buffer_size=buf, n_seeds_expected=c) for (b, n, buf), c in counts.items()]


def experiment_ids():
    return [exp["id"] for exp in config["experiments"]]


def experiment_rows(experiment):
    """The (benchmark, method, run_name, buffer_size, seeds, n_seeds_expected) one experiment block asks for."""
    seeds = {}
    for (benchmark, name, buffer, seed), run in RUNS.items():
        if experiment in run["experiments"]:
            seeds.setdefault((benchmark, run["method"], name, buffer), []).append(seed)
    return [dict(benchmark=b, method=m, run_name=n, buffer_size=buf, seeds=s, n_seeds_expected=len(s))
            for (b, m, n, buf), s in seeds.items()]


def experiment_title(experiment):
    return next(exp.get("title", exp["id"]) for exp in config["experiments"] if exp["id"] == experiment)


def experiment_table_targets():
    return [TABLES / "experiments" / f"{e}.{ext}" for e in experiment_ids() for ext in ("md", "tex", "csv")]


def experiment_figure_targets():
    """The papers' plots of every experiment, and SER's Figure 1 where the experiment has SER runs."""
    def kinds(e):
        ser = any("sal" in get_method(r["method"])[0].stream_fields for r in experiment_rows(e))
        return (*EXPERIMENT_FIGURES, *experiment(e)["figures"], *((SALIENCY_FIGURE,) if ser else ()))

    return [FIGURE_DIR / "experiments" / f"{e}_{kind}.{ext}"
            for e in experiment_ids() for kind in kinds(e) for ext in ("png", "pdf")]


def experiment(experiment_id):
    return next(exp for exp in config["experiments"] if exp["id"] == experiment_id)


def figure_options(experiment_id):
    """How an experiment's figures read its runs: the accuracy of the scenario it trained for, its ± over
    seeds, and the chance level of each benchmark (for the BI-R bars)."""
    exp = experiment(experiment_id)
    setting = "task_il" if exp["scenario"] == "task" else "class_il"
    chance = {b: 100.0 / (get_benchmark(b).classes_per_task if setting == "task_il" else get_benchmark(b).n_classes)
              for b in exp["benchmarks"]}
    return {"setting": setting, "spread": exp["spread"], "chance": chance}


SALIENCY_DIR = RESULTS / "saliency"
BIR_CONV_DIR = RESULTS / "pretrained" / "bir_conv"


def bir_conv_file(key):
    """conv.pt of the BI-R conv pretraining `key` (clcore.scenarios.BIR_CONV_PRETRAINING)."""
    tag = "upstream" if config["bir_conv"]["source"] == "upstream_file" else BIR_CONV_PRETRAINING[key].tag
    return BIR_CONV_DIR / key / tag / "conv.pt"


def artefact_inputs(wildcards):
    """The pretrained inputs a run needs, by artefact name (none for most methods): SER's saliency
    predictor and, where the benchmark trains on them, its pseudo target maps; the BI-R family's conv layers."""
    run = run_info(wildcards)
    cls = get_method(run["method"])[0]
    needed = cls.artefacts_for(run["hparams"])
    spec = get_benchmark(wildcards.dataset)
    inputs = {}
    if "saliency_predictor" in needed:
        if spec.saliency is None:
            raise ValueError(f"benchmark '{wildcards.dataset}' has no saliency setting: {cls.__name__} cannot run on it")
        inputs["saliency_predictor"] = SALIENCY_DIR / spec.saliency / "saliency_predictor.pt"
        if "sal" in cls.stream_fields and spec.saliency_targets == "pseudo":
            inputs["pseudo_saliency"] = SALIENCY_DIR / spec.saliency / "pseudo" / spec.prepared / "meta.json"
    if "bir_conv" in needed:
        if spec.bir_conv is None:
            raise ValueError(f"benchmark '{wildcards.dataset}' has no BI-R conv pretraining: run "
                             f"{run['method']} there with conv: none or scratch")
        inputs["bir_conv"] = bir_conv_file(spec.bir_conv)
    return inputs


def robust_experiments():
    """The experiment blocks with SER's robustness studies (`robust_eval`)."""
    return [exp for exp in config["experiments"] if "robust_eval" in exp]


def robust_settings(wildcards):
    """The robust_eval settings of a run: those of the first robustness block that holds it."""
    return next(exp["robust_eval"] for exp in robust_experiments() if exp["id"] in run_info(wildcards)["experiments"])


def keeps_final(wildcards):
    """Runs of a robustness block keep their trained weights (final.pt) for rule robust_eval."""
    return any(exp["id"] in run_info(wildcards)["experiments"] for exp in robust_experiments())


def robust_files(experiment_id):
    return [RUN_DIR.format(dataset=b, method=m, buffer=buf, seed=s) + "/robust_adv.parquet"
            for (b, m, buf, s), run in RUNS.items() if experiment_id in run["experiments"]]


def robustness_table_targets():
    return [TABLES / "robustness" / f"{exp['id']}.{ext}" for exp in robust_experiments() for ext in ("md", "csv")]