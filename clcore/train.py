"""One run: the task loop with evaluation after every task, checkpoints at task boundaries,
resume after a kill, and the run's outputs (metrics.parquet, run.json)."""

from __future__ import annotations

import functools
import logging
import platform
import random
import resource
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import __version__
from .data.prepared import file_digest
from .device import describe, pick_device
from .errors import InputError
from .hparams import make_hparams
from .io import atomic_path, git_commit, read_json, run_lock, write_json
from .methods import family_of, get_method
from .methods.base import Context
from .metrics import stream_summary, summarize
from .results import (
    RANDOM_INIT_ROW,
    SETTINGS,
    STREAM_EVAL_TASK,
    STREAM_SETTING,
    accuracy_matrix,
    accuracy_rows,
    metric_rows,
    save_metrics,
)
from .scenarios import Scenario, get_benchmark, load_scenario
from .speed import numerics, resolved_precision

log = logging.getLogger("clcore.train")
CHECKPOINT = "checkpoint.pt"
FINAL = "final.pt"  # the trained weights, kept for evaluations after training (rule robust_eval)
RUN_JSON_VERSION = 1


@torch.no_grad()
def evaluate(method, scenario: Scenario, after_task: int = RANDOM_INIT_ROW, batch_size: int = 1024) -> dict[str, list[float]]:
    """Accuracy (%) on every task's test data, class-IL and task-IL, from one forward per batch.

    Class-IL after task t chooses among the classes of tasks 0..max(t, i) for a sample of task i, as later
    Mammoth's `evaluate` does (`outputs[:, :n_seen_classes]`; task t+1 is the FWT probe, scored when its
    classes become known), or among all classes where the protocol says so (`class_il_rows: all`: the DER
    release, SER, WSCL). The random-init probe row and the last row choose among all classes either way.
    """
    method.eval()
    n_tasks, dev = scenario.n_tasks, scenario.device
    correct = {s: torch.zeros(n_tasks, device=dev) for s in SETTINGS}
    count = torch.zeros(n_tasks, device=dev)
    for start in range(0, scenario.test_x.shape[0], batch_size):
        x, y = scenario.test_x[start:start + batch_size], scenario.test_y[start:start + batch_size]
        scores = method.predict(scenario.transform.test(x))
        task = scenario.class_task[y]
        if after_task != RANDOM_INIT_ROW and method.hp.class_il_rows == "seen":
            scores = scores.masked_fill(~scenario.class_il_mask(task, after_task), float("-inf"))
        masked = scores.masked_fill(~scenario.task_il_mask(task), float("-inf"))
        for setting, s in (("class_il", scores), ("task_il", masked)):
            correct[setting].index_add_(0, task, (s.argmax(1) == y).float())
        count.index_add_(0, task, torch.ones_like(task, dtype=torch.float))
    method.train()
    return {s: (100 * correct[s] / count).tolist() for s in SETTINGS}


@torch.no_grad()
def evaluate_stream(method, scenario, batch_size: int = 128) -> float:
    """Accuracy (%) on a stream's whole test set, the arg-max over every class, in batches of 128 as ar1-pytorch
    (docs/protocol.md#nic-streams)."""
    method.eval()
    correct = (method.test_scores(scenario.test_x, scenario.transform, batch_size).argmax(1) == scenario.test_y).sum()
    method.train()
    return 100 * float(correct) / scenario.test_y.shape[0]


def _evaluation_rows(method, scenario, after_task: int) -> tuple[list[dict], str]:
    """The evaluation's metric rows and a one-line account of it for the log."""
    if scenario.is_stream:
        acc = evaluate_stream(method, scenario)
        rows, headline = [metric_rows("accuracy", acc, STREAM_SETTING, after_task, STREAM_EVAL_TASK)], f"{acc:.2f}"
    else:
        acc = evaluate(method, scenario, after_task)
        rows = [r for s in SETTINGS for r in accuracy_rows(acc[s], s, after_task)]
        headline = (f"class-IL {np.mean(acc['class_il'][: after_task + 1]):.2f}, "
                    f"task-IL {np.mean(acc['task_il'][: after_task + 1]):.2f}")
    method.eval()
    rows += method.evaluation_rows(scenario, after_task)
    method.train()
    return rows, headline


def _rng_states() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if states["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_training(benchmark: str, method: str, buffer_size: int, seed: int, hparams: dict,
                 prepared_dir="resources/prepared", out_dir="results/runs/run", run_name: str | None = None,
                 device: str = "auto", threads: int | None = None, progress: bool = False,
                 artefacts: dict | None = None, keep_final: bool = False, gpu_slot: dict | None = None,
                 validation: bool = False) -> dict:
    """Train `method` on `benchmark` and write `<out_dir>/metrics.parquet` and `<out_dir>/run.json`.

    If `<out_dir>/checkpoint.pt` exists (a killed run), training resumes after its last finished task;
    the result equals that of an uninterrupted run with the same seed. `artefacts` names pretrained
    inputs (e.g. {"saliency_predictor": path}) for the methods that need them. `keep_final` writes the
    trained weights (no buffer, no optimiser) to `<out_dir>/final.pt` for `load_trained`. `validation`
    trains on 90 % of the training data and evaluates on the held-out rest (hyperparameter searches).
    The run directory is locked while the run trains: the same run started twice fails with RunInProgressError.
    """
    cls, _ = get_method(method)
    hp = make_hparams(method, hparams)
    if cls.uses_buffer and buffer_size <= 0:
        raise InputError(f"method '{method}' replays from a buffer: give a buffer size > 0 (--buffer)")
    if not cls.uses_buffer and buffer_size != 0:
        raise InputError(f"method '{method}' has no buffer: run it with buffer size 0")
    with run_lock(out_dir, f"run {benchmark}/{run_name or method}/buf{buffer_size}/seed{seed}"):
        return _train(benchmark, method, cls, hp, buffer_size, seed, hparams, prepared_dir, Path(out_dir), run_name,
                      device, threads, progress, artefacts, keep_final, gpu_slot, validation)


def _train(benchmark, method, cls, hp, buffer_size, seed, hparams, prepared_dir, out_dir: Path, run_name, device,
           threads, progress, artefacts, keep_final, gpu_slot, validation) -> dict:
    started = time.time()
    spec = get_benchmark(benchmark)
    if threads:
        torch.set_num_threads(threads)
    dev = pick_device(device)

    artefacts = dict(artefacts or {})
    scenario, deviations = _scenario(method, spec, prepared_dir, dev, artefacts, hp, seed, validation)
    _seed_everything(seed)
    model = build_method(cls, hp, scenario, seed, buffer_size, artefacts)

    ckpt_path = out_dir / CHECKPOINT
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=dev, weights_only=False)
        model.load_state_dict(ckpt["method"])
        _set_rng_states(ckpt["rng"])
        rows, first_task, phases = ckpt["rows"], ckpt["next_task"], ckpt["phases"]
        phases["resumed_at_task"] = phases.get("resumed_at_task", []) + [first_task]
        log.info("resuming %s from task %d of %d (%s)", out_dir, first_task + 1, scenario.n_tasks, ckpt_path)
    else:
        rows, first_task, phases = [], 0, {"train_s": [], "eval_s": [], "elapsed_s": 0.0}
        if model.random_init_probe and not scenario.is_stream:
            with numerics(hp.precision, dev):
                rows += _evaluation_rows(model, scenario, RANDOM_INIT_ROW)[0]

    elapsed_before = phases["elapsed_s"]  # time spent before a kill, for wall_time_s
    tasks = range(first_task, scenario.n_tasks)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=scenario.n_tasks * hp.n_epochs, initial=first_task * hp.n_epochs, unit="epoch",
                   desc=f"{method} on {benchmark}")
    for t in tasks:
        tic = time.time()
        task = scenario.task(t, model.stream_fields)
        model.begin_task(task)
        with numerics(hp.precision, dev):
            rows += model.train_task(task, on_epoch=(lambda e: bar.update(1)) if bar else None)
        model.end_task(task)
        if t + 1 < scenario.n_tasks:
            model.look_ahead(scenario, t + 1)
        phases["train_s"].append(time.time() - tic)
        tic = time.time()
        with numerics(hp.precision, dev):
            eval_rows, headline = _evaluation_rows(model, scenario, t)
        rows += eval_rows
        phases["eval_s"].append(time.time() - tic)
        log.info("task %d/%d: %s (train %.1f s)", t + 1, scenario.n_tasks, headline, phases["train_s"][-1])
        if bar:
            bar.set_postfix_str(headline)
        if t < scenario.n_tasks - 1 and (t + 1) % scenario.checkpoint_every == 0:
            phases["elapsed_s"] = elapsed_before + time.time() - started
            with atomic_path(ckpt_path) as tmp:
                torch.save({"method": model.state_dict(), "rng": _rng_states(), "rows": rows, "next_task": t + 1,
                            "phases": phases}, tmp)
    if bar:
        bar.close()

    summary = _stream_summaries(rows) if scenario.is_stream else _summaries(rows, model.full_accuracy_matrix)
    rows += [metric_rows(name, value, setting) for setting, values in summary.items() for name, value in values.items()]
    if keep_final:
        with atomic_path(out_dir / FINAL) as tmp:
            torch.save({k: v for k, v in model.state_dict().items() if not k.endswith("_extra_state")}, tmp)
    save_metrics(rows, out_dir / "metrics.parquet")
    info = {
        "run_json_version": RUN_JSON_VERSION,
        "benchmark": benchmark, "method": method, "run_name": run_name or method, "buffer_size": buffer_size,
        "seed": seed, "hparams": hparams, "evaluated_on": "validation" if validation else spec.test_split,
        "benchmark_spec": {k: v for k, v in vars(spec).items()},
        "artefacts": {name: {"path": str(path), "sha256": file_digest(path)} for name, path in artefacts.items()},
        "deviations": deviations,
        "versions": {"clcore": __version__, "torch": torch.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
        "git_commit": git_commit(), "device": describe(dev), "host": platform.node(), "gpu_slot": gpu_slot,
        "threads": torch.get_num_threads(),
        "precision_used": resolved_precision(hp.precision, dev),  # what `auto` became on this device
        "wall_time_s": elapsed_before + time.time() - started,
        "phases": phases,
        "peak_host_mem_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mem_mb": torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None,
        "summary": summary,
        **model.run_info(rows),
    }
    write_json(out_dir / "run.json", info)
    ckpt_path.unlink(missing_ok=True)
    return info


def _scenario(method: str, spec, prepared_dir, dev, artefacts: dict, hp, seed: int,
              validation: bool = False) -> tuple[Scenario, list[str]]:
    """The benchmark's data as the method's family prepares it, and the deviations that records."""
    scenario = load_scenario(spec, prepared_dir, dev, getattr(hp, "class_order", None), seed, validation)
    return scenario, family_of(method).prepare_scenario(scenario, artefacts, hp)


def build_method(cls, hp, scenario: Scenario, seed: int, buffer_size: int, artefacts: dict | None = None):
    """A freshly initialised method on the scenario's device, as training, `load_trained` and the
    benchmark build it."""
    make_net = functools.partial(scenario.build_net, hp.channels_last, hp.compile)
    ctx = Context(n_classes=scenario.n_classes, task_classes=scenario.task_classes, transform=scenario.transform,
                  device=scenario.device, seed=seed, buffer_size=buffer_size, make_net=make_net,
                  reset_optimizer_each_task=scenario.spec.reset_optimizer_each_task, artefacts=dict(artefacts or {}),
                  input_shape=scenario.input_shape, extra_data=scenario.extra_data)
    return cls(make_net(), hp, ctx).to(scenario.device)


def load_trained(run_dir, prepared_dir="resources/prepared", device: str = "auto"):
    """(method in eval mode, its Scenario) of a finished run that kept `final.pt`, rebuilt from run.json."""
    run_dir = Path(run_dir)
    info = read_json(run_dir / "run.json")
    if not (run_dir / FINAL).exists():
        raise FileNotFoundError(f"{run_dir / FINAL} is missing: train the run with keep_final (the pipeline does "
                                f"this for runs of an experiment block with `robust_eval:`)")
    artefacts = {name: entry["path"] for name, entry in info.get("artefacts", {}).items()}
    cls, _ = get_method(info["method"])
    hp = make_hparams(info["method"], info["hparams"])
    scenario, _ = _scenario(info["method"], get_benchmark(info["benchmark"]), prepared_dir, pick_device(device),
                            artefacts, hp, info["seed"])
    model = build_method(cls, hp, scenario, info["seed"], info["buffer_size"], artefacts)
    missing, unexpected = model.load_state_dict(torch.load(run_dir / FINAL, map_location=scenario.device), strict=False)
    if unexpected or any(not k.endswith("_extra_state") for k in missing):
        raise ValueError(f"{run_dir / FINAL} does not match {info['method']}: missing {missing}, unexpected {unexpected}")
    model.task = scenario.n_tasks - 1
    return model.eval(), scenario


def _summaries(rows, full_matrix: bool) -> dict:
    metrics = pd.DataFrame(rows)
    out = {}
    for setting in SETTINGS:
        s = summarize(*accuracy_matrix(metrics, setting))
        if not full_matrix:  # Joint 'final': rows before the last task are the untrained network
            s.update(aia=float("nan"), forgetting=float("nan"), forgetting_mammoth=float("nan"),
                     bwt=float("nan"), fwt=float("nan"))
        out[setting] = s
    return out


def _stream_summaries(rows) -> dict:
    """A stream's summary (docs/protocol.md#nic-streams): `nic` holds the accuracy after a quarter, half and three
    quarters of the stream, at its end, at its best and on average; `class_il` carries the final accuracy as FAA and
    the stream's mean as AIA for the shared tables (no task-IL setting)."""
    metrics = pd.DataFrame(rows)
    acc = metrics[(metrics.metric == "accuracy") & (metrics.setting == STREAM_SETTING)].sort_values("after_task")
    nic = stream_summary(acc.value.to_numpy())
    undefined = dict.fromkeys(summarize(np.ones((1, 1))), float("nan"))
    return {"class_il": {**undefined, "faa": nic["final"], "aia": nic["mean"]}, "task_il": undefined,
            STREAM_SETTING: nic}
