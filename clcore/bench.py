"""`clcore bench`: how fast a method's training step is, and where its time goes (docs/speed.md#clcore-bench).

For each method the bench times (a) the bare backbone step (forward + cross-entropy + backward + optimiser step on
one ready-made stream batch) and (b) one full `observe` step in task 2 with the buffer filled to capacity (stream
augmentation, replay sampling and augmentation, every pass, buffer insertion), at the run's speed options. A second
window of method steps is instrumented: the time inside augmentation, buffer sampling and insertion, and the host
reads of tensor values. `overhead_ratio = method step / (expected passes × backbone step)` is the cost of everything
that is not forward/backward. Where a paper benchmark's data is absent, it runs on noise of the real shape.
"""

from __future__ import annotations

import contextlib
import functools
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
import torch.nn.functional as F

from .data.prepared import write_prepared
from .device import describe, pick_device
from .errors import InputError
from .hparams import make_hparams, resolve
from .methods import get_method
from .scenarios import BenchmarkSpec, Scenario, StreamSpec, get_benchmark, load_scenario
from .speed import numerics, resolved_precision
from .train import build_method

# forward/backward passes of one stream batch per step: fixed, or the stream batch plus replay draws of
# `minibatch_size` (ER on seq-cifar10 replays 128 beside a stream batch of 32: 5 passes' worth)
FIXED_PASSES = {"sgd": 1, "joint": 1, "lwf": 1, "ewc_on": 1, "si": 1, "icarl": 4 / 3, "lwf_mc": 4 / 3,
                "icarl_mixup": 4 / 3, "akr": 2}  # akr: the step, the teacher on x̃, both networks' features of x for S
REPLAY_DRAWS = {"er": 1, "er_ace": 1, "der": 1, "derpp": 2}


def expected_passes(method: str, hp) -> float | None:
    """Passes of one stream batch's size a step of `method` costs; None where unknown (own networks: BI-R)."""
    if method in REPLAY_DRAWS:
        return 1 + REPLAY_DRAWS[method] * hp.minibatch_size / hp.batch_size
    return FIXED_PASSES.get(method)

BENCH_SCHEMA = pa.schema(
    [("benchmark", pa.string()), ("method", pa.string()), ("backbone", pa.string()), ("batch_size", pa.int32()),
     ("buffer_size", pa.int32()), ("data", pa.string()), ("channels_last", pa.bool_()), ("precision", pa.string()),
     ("compile", pa.bool_()), ("device_name", pa.string()), ("torch_version", pa.string()),
     ("threads", pa.int32()), ("step_ms_median", pa.float64()), ("step_ms_p10", pa.float64()),
     ("step_ms_p90", pa.float64()), ("backbone_step_ms", pa.float64()), ("ratio", pa.float64()),
     ("expected_passes", pa.float64()), ("overhead_ratio", pa.float64()), ("overhead", pa.float64()),
     ("images_per_s", pa.float64()), ("aug_ms", pa.float64()), ("insert_ms", pa.float64()),
     ("sample_ms", pa.float64()), ("eval_images_per_s", pa.float64()),
     # where a method step's time goes (shares of the step; passes = expected passes x the bare backbone step)
     ("share_passes", pa.float64()), ("share_augmentation", pa.float64()), ("share_sampling", pa.float64()),
     ("share_insertion", pa.float64()), ("share_other", pa.float64()), ("host_reads_per_step", pa.float64()),
     ("share_evaluation", pa.float64()),  # of one task of the protocol: training steps + one evaluation
     ("peak_gpu_mem_mb", pa.float64()), ("host_rss_mb", pa.float64())],
    metadata={"schema_version": "2"},
)


def fabricate(spec: BenchmarkSpec, prepared_dir, train_per_class: int, test_per_class: int, seed: int = 0) -> dict:
    """`<prepared_dir>/<spec.prepared>/`: uint8 noise of the benchmark's real image shape, `train_per_class` training
    and `test_per_class` test images for each of its classes (docs/speed.md#fabricated-data). For timing only: the
    network, batches, buffer and steps are the protocol's, the labels carry no signal."""
    from .estimate import known_input_shape

    if isinstance(spec, StreamSpec):
        raise InputError(f"{spec.name}: a stream needs its batch index files; fabricate makes task benchmarks only")
    shape = known_input_shape(spec)
    rng = np.random.default_rng(seed)

    def split(per_class: int) -> dict[str, np.ndarray]:
        y = np.repeat(np.arange(spec.n_classes, dtype=np.int16), per_class)
        return {"x": rng.integers(0, 256, (len(y), *shape), dtype=np.uint8), "y": y}

    meta = {"source": [{"name": "clcore.bench.fabricate", "url": "generated"}], "fabricated": True,
            "classes": [f"class{k}" for k in range(spec.n_classes)], "class_ids": None,
            "label_order_source": "fabricated", "pixel_max": 255, "resize": None, "decoder": None,
            "generator": {"seed": seed, "train_per_class": train_per_class, "test_per_class": test_per_class},
            "deviations": ["uniform noise for timing: no image content, the labels carry no signal"]}
    return write_prepared(Path(prepared_dir) / spec.prepared, spec.prepared,
                          {"train": split(train_per_class), "test": split(test_per_class)}, meta)


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _time_windows(fn, steps: int, warmup: int, repeats: int, dev) -> list[float]:
    """Milliseconds per call in `repeats` windows of steps/repeats calls (synchronised at boundaries)."""
    for _ in range(warmup):
        fn()
    per_window = max(steps // repeats, 1)
    out = []
    for _ in range(repeats):
        _sync(dev)
        tic = time.perf_counter()
        for _ in range(per_window):
            fn()
        _sync(dev)
        out.append(1000 * (time.perf_counter() - tic) / per_window)
    return out


def bare_step(net, x, y, in_precision=contextlib.nullcontext):
    """One bare training step of `net` on a ready batch: forward, cross-entropy, backward, SGD step."""
    opt = torch.optim.SGD(net.parameters(), lr=0.01)

    def step():
        with in_precision():
            loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


class _Breakdown:
    """Time spent inside the augmentation, buffer sampling and insertion calls of method steps, and the host reads
    of tensor values (`.item()`, `float(t)`, `if t:` ...: each a synchronisation on a GPU), counted while active."""

    HOST_READS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__")

    def __init__(self, dev):
        self.dev, self.ms, self.host_reads, self._inside_sample = dev, {"aug": 0.0, "sample": 0.0, "insert": 0.0}, 0, 0

    def _timed(self, fn, name):
        def timed(*args, **kwargs):
            _sync(self.dev)
            tic = time.perf_counter()
            self._inside_sample += name == "sample"
            try:
                return fn(*args, **kwargs)
            finally:
                self._inside_sample -= name == "sample"
                _sync(self.dev)
                ms = 1000 * (time.perf_counter() - tic)
                self.ms[name] += ms
                if name == "aug" and self._inside_sample:
                    self.ms["sample"] -= ms  # the sample's own augmentation counts as augmentation
        return timed

    def run(self, step, n: int, transform, buffer) -> None:
        patched = [(transform, "train", "aug")] + ([(buffer, "sample", "sample"), (buffer, "add", "insert")]
                                                   if hasattr(buffer, "sample") else [])
        originals = {name: getattr(torch.Tensor, name) for name in self.HOST_READS}

        def counted(original):
            def read(*args, **kwargs):
                self.host_reads += 1
                return original(*args, **kwargs)
            return read

        try:
            for obj, attr, name in patched:
                setattr(obj, attr, self._timed(getattr(obj, attr), name))
            for name, original in originals.items():
                setattr(torch.Tensor, name, counted(original))
            for _ in range(n):
                step()
        finally:
            for name, original in originals.items():
                setattr(torch.Tensor, name, original)
            for obj, attr, _ in patched:
                vars(obj).pop(attr, None)  # back to the class's method
            _sync(self.dev)


def bench_method(scenario: Scenario, method: str, buffer_size: int, steps: int, warmup: int, repeats: int,
                 hparams_dir="config/hparams", speed: dict | None = None, data: str = "prepared",
                 prepared_dir="resources/prepared") -> dict:
    """One method's step on the scenario in task 2 with a full buffer, its breakdown, the bare backbone step and the
    evaluation throughput, at the speed options `speed` (default: the benchmark's). The evaluation's share is that
    of one task of the protocol, with the task sizes of `prepared_dir` (or the dataset's known ones)."""
    spec, dev = scenario.spec, scenario.device
    cls, _ = get_method(method)
    buffer_size = buffer_size if cls.uses_buffer else 0
    hp = make_hparams(method, resolve(method, spec.name, buffer_size, speed, hparams_dir=hparams_dir))
    torch.manual_seed(0)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)

    model = build_method(cls, hp, scenario, 0, buffer_size)
    make_net = model.ctx.make_net
    first, second = (scenario.task(t, model.stream_fields) for t in (0, 1))
    bs = hp.batch_size
    gen = torch.Generator(device=dev).manual_seed(1)
    in_precision = functools.partial(numerics, hp.precision, dev)
    model.begin_task(first)
    with in_precision():
        for start in range(0, max(buffer_size, bs), bs):  # offer at least the buffer's capacity
            idx = torch.arange(start, start + bs, device=dev) % first.x.shape[0]
            model.observe(scenario.transform.train(first.x[idx], gen), first.y[idx], first.x[idx],
                          **{k: v[idx] for k, v in first.fields.items()})
    model.end_task(first)
    model.begin_task(second)  # task 2: every replay/distillation path is active
    x_raw, y = second.x[:bs], second.y[:bs]
    extras = {k: v[:bs] for k, v in second.fields.items()}

    def method_step():
        with in_precision():
            model.observe(scenario.transform.train(x_raw, gen), y, x_raw, **extras)

    method_ms = _time_windows(method_step, steps, warmup, repeats, dev)
    breakdown = _Breakdown(dev)
    n_instrumented = max(steps // repeats, 1)
    breakdown.run(method_step, n_instrumented, scenario.transform, model.buffer)

    backbone_step = bare_step(make_net(), scenario.transform.train(x_raw, gen), y, in_precision)
    backbone_ms = statistics.median(_time_windows(backbone_step, steps, warmup, repeats, dev))
    aug_ms = statistics.median(_time_windows(lambda: scenario.transform.train(x_raw, gen), steps, warmup, repeats, dev))
    insert_ms = sample_ms = float("nan")
    if cls.uses_buffer and hasattr(model.buffer, "sample"):  # the reservoir buffers
        stored = {k: v[:bs].clone() for k, v in model.buffer.data.items()}
        insert_ms = statistics.median(_time_windows(lambda: model.buffer.add(**stored), steps, warmup, repeats, dev))
        sample_ms = statistics.median(_time_windows(lambda: model.buffer.sample(bs, scenario.transform), steps,
                                                    warmup, repeats, dev))
    model.eval()
    n_eval = min(scenario.test_x.shape[0], 2048 if dev.type == "cuda" else 512)

    def evaluate_batch():
        with torch.no_grad(), in_precision():
            model.test_scores(scenario.test_x[:n_eval], scenario.transform, 1024)

    eval_ms = statistics.median(_time_windows(evaluate_batch, 3, 1, 3, dev))
    median = statistics.median(method_ms)
    passes = expected_passes(method, hp) or float("nan")
    ratio = median / backbone_ms
    q = statistics.quantiles(method_ms, n=10) if len(method_ms) > 1 else [median] * 9
    share = {name: ms / n_instrumented / median for name, ms in breakdown.ms.items()}
    share["passes"] = passes * backbone_ms / median
    share["other"] = 1 - sum(share.values())  # losses, optimiser, what the pass estimate misses (NaN without one)
    # evaluation's share of a task of the protocol: its planned steps against one evaluation of the test set
    from .estimate import task_sizes  # estimate imports this module

    sizes = task_sizes(spec, prepared_dir)
    task_ms = median * cls.planned_steps(hp, sizes, buffer_size) / len(sizes)
    eval_task_ms = eval_ms * scenario.test_x.shape[0] / n_eval
    return {"benchmark": spec.name, "method": method, "backbone": spec.backbone, "batch_size": bs,
            "buffer_size": buffer_size, "data": data, "channels_last": hp.channels_last,
            "precision": resolved_precision(hp.precision, dev), "compile": hp.compile,
            "device_name": describe(dev), "torch_version": torch.__version__,
            "threads": torch.get_num_threads(), "step_ms_median": median, "step_ms_p10": q[0], "step_ms_p90": q[-1],
            "backbone_step_ms": backbone_ms, "ratio": ratio, "expected_passes": passes,
            "overhead_ratio": ratio / passes, "overhead": ratio / passes - 1, "images_per_s": 1000 * bs / median,
            "aug_ms": aug_ms, "insert_ms": insert_ms, "sample_ms": sample_ms,
            "eval_images_per_s": 1000 * n_eval / eval_ms,
            "share_passes": share["passes"], "share_augmentation": share["aug"], "share_sampling": share["sample"],
            "share_insertion": share["insert"], "share_other": share["other"],
            "host_reads_per_step": breakdown.host_reads / n_instrumented,
            "share_evaluation": eval_task_ms / (task_ms + eval_task_ms),
            "peak_gpu_mem_mb": torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else float("nan"),
            "host_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


# test images per class of the released datasets, for fabricated stand-ins (the evaluation's share)
TEST_PER_CLASS = {"mnist": 1000, "cifar10": 1000, "cifar100": 100, "tinyimagenet": 50}


def bench_scenario(benchmark: str, buffer_size: int, dev, data: str = "auto", prepared_dir="resources/prepared",
                   ) -> tuple[Scenario, str]:
    """The benchmark's data on `dev`: the prepared dataset (generated where clcore makes it), or, with `fabricated`
    or when it is absent (`auto`), noise of its real shape: enough training images per class for the buffer and
    two batches, the released test set's size."""
    from .data import GENERATED, prepare
    from .data.prepared import parse_name

    spec = get_benchmark(benchmark)
    base = parse_name(spec.prepared)[0]
    if data == "prepared" or (data == "auto" and (base in GENERATED or
                                                  (Path(prepared_dir) / spec.prepared / "meta.json").exists())):
        prepare(spec.prepared, prepared_dir, download=False, needed_by="clcore bench")
        return load_scenario(spec, prepared_dir, dev), "prepared"
    with tempfile.TemporaryDirectory() as tmp:
        fabricate(spec, tmp, -(-max(buffer_size, 2 * spec.batch_size) // spec.classes_per_task),
                  TEST_PER_CLASS.get(base, -(-2048 // spec.n_classes)))
        return load_scenario(spec, tmp, dev), "fabricated"


def run_bench(benchmark: str, methods: list[str], buffer_size: int, steps: int = 60, warmup: int = 10,
              repeats: int = 5, device: str = "auto", prepared_dir="resources/prepared",
              hparams_dir="config/hparams", speed: dict | None = None, data: str = "auto") -> pd.DataFrame:
    dev = pick_device(device)
    scenario, source = bench_scenario(benchmark, buffer_size, dev, data, prepared_dir)
    rows = [bench_method(scenario, m, buffer_size, steps, warmup, repeats, hparams_dir, speed, source, prepared_dir)
            for m in methods]
    return pd.DataFrame(rows, columns=BENCH_SCHEMA.names)
