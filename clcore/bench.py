"""`clcore bench`: how fast a method's training step is, and how much of it is not the network.

For each method the bench times (a) the bare backbone step (forward + cross-entropy + backward +
optimiser step on one ready-made stream batch) and (b) one full `observe` step in task 2 with the
buffer filled to capacity (stream augmentation, replay sampling and augmentation, every pass, buffer
insertion). `overhead_ratio = method step / (expected passes × backbone step)` is the cost of
everything that is not forward/backward (docs/protocol.md#clcore-bench).
"""

from __future__ import annotations

import statistics
import time

import pandas as pd
import pyarrow as pa
import torch
import torch.nn.functional as F

from .device import describe, pick_device
from .hparams import make_hparams, resolve
from .methods import get_method
from .scenarios import Scenario, get_benchmark
from .train import build_method

EXPECTED_PASSES = {"sgd": 1, "joint": 1, "lwf": 1, "ewc_on": 1, "si": 1, "er": 2, "er_ace": 2, "der": 2, "derpp": 3,
                   "icarl": 4 / 3, "lwf_mc": 4 / 3, "icarl_mixup": 4 / 3,
                   "akr": 2}  # akr: the training step, the teacher on x̃, and both networks' features of x for S

BENCH_SCHEMA = pa.schema(
    [("benchmark", pa.string()), ("method", pa.string()), ("backbone", pa.string()), ("batch_size", pa.int32()),
     ("buffer_size", pa.int32()), ("device_name", pa.string()), ("torch_version", pa.string()),
     ("threads", pa.int32()), ("step_ms_median", pa.float64()), ("step_ms_p10", pa.float64()),
     ("step_ms_p90", pa.float64()), ("backbone_step_ms", pa.float64()), ("ratio", pa.float64()),
     ("expected_passes", pa.float64()), ("overhead_ratio", pa.float64()), ("overhead", pa.float64()),
     ("images_per_s", pa.float64()), ("aug_ms", pa.float64()), ("insert_ms", pa.float64()),
     ("sample_ms", pa.float64()), ("eval_images_per_s", pa.float64())],
    metadata={"schema_version": "1"},
)


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


def bare_step(net, x, y):
    """One bare training step of `net` on a ready batch: forward, cross-entropy, backward, SGD step."""
    opt = torch.optim.SGD(net.parameters(), lr=0.01)

    def step():
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def bench_method(scenario: Scenario, method: str, buffer_size: int, steps: int, warmup: int, repeats: int,
                 hparams_dir="config/hparams") -> dict:
    spec, dev = scenario.spec, scenario.device
    cls, _ = get_method(method)
    buffer_size = buffer_size if cls.uses_buffer else 0
    hp = make_hparams(method, resolve(method, spec.name, buffer_size, hparams_dir=hparams_dir))
    torch.manual_seed(0)

    model = build_method(cls, hp, scenario, 0, buffer_size)
    make_net = model.ctx.make_net
    first, second = (scenario.task(t, model.stream_fields) for t in (0, 1))
    bs = hp.batch_size
    gen = torch.Generator(device=dev).manual_seed(1)
    model.begin_task(first)
    for start in range(0, max(buffer_size, bs), bs):  # offer at least the buffer's capacity
        idx = torch.arange(start, start + bs, device=dev) % first.x.shape[0]
        model.observe(scenario.transform.train(first.x[idx], gen), first.y[idx], first.x[idx],
                      **{k: v[idx] for k, v in first.fields.items()})
    model.end_task(first)
    model.begin_task(second)  # task 2: every replay/distillation path is active
    x_raw, y = second.x[:bs], second.y[:bs]
    extras = {k: v[:bs] for k, v in second.fields.items()}

    def method_step():
        model.observe(scenario.transform.train(x_raw, gen), y, x_raw, **extras)

    method_ms = _time_windows(method_step, steps, warmup, repeats, dev)

    backbone_step = bare_step(make_net(), scenario.transform.train(x_raw, gen), y)
    backbone_ms = statistics.median(_time_windows(backbone_step, steps, warmup, repeats, dev))
    aug_ms = statistics.median(_time_windows(lambda: scenario.transform.train(x_raw, gen), steps, warmup, repeats, dev))
    insert_ms = sample_ms = float("nan")
    if cls.uses_buffer and hasattr(model.buffer, "sample"):  # the reservoir buffers
        stored = {k: v[:bs].clone() for k, v in model.buffer.data.items()}
        insert_ms = statistics.median(_time_windows(lambda: model.buffer.add(**stored), steps, warmup, repeats, dev))
        sample_ms = statistics.median(_time_windows(lambda: model.buffer.sample(bs, scenario.transform), steps, warmup, repeats, dev))
    model.eval()
    n_eval = min(scenario.test_x.shape[0], 2048)
    eval_ms = statistics.median(_time_windows(lambda: model.predict(scenario.transform.test(scenario.test_x[:n_eval])), 3, 1, 3, dev))
    median = statistics.median(method_ms)
    passes = EXPECTED_PASSES.get(method, float("nan"))
    ratio = median / backbone_ms
    q = statistics.quantiles(method_ms, n=10) if len(method_ms) > 1 else [median] * 9
    return {"benchmark": spec.name, "method": method, "backbone": spec.backbone, "batch_size": bs,
            "buffer_size": buffer_size, "device_name": describe(dev), "torch_version": torch.__version__,
            "threads": torch.get_num_threads(), "step_ms_median": median, "step_ms_p10": q[0], "step_ms_p90": q[-1],
            "backbone_step_ms": backbone_ms, "ratio": ratio, "expected_passes": passes,
            "overhead_ratio": ratio / passes, "overhead": ratio / passes - 1, "images_per_s": 1000 * bs / median,
            "aug_ms": aug_ms, "insert_ms": insert_ms, "sample_ms": sample_ms,
            "eval_images_per_s": 1000 * n_eval / eval_ms}


def run_bench(benchmark: str, methods: list[str], buffer_size: int, steps: int = 60, warmup: int = 10,
              repeats: int = 5, device: str = "auto", prepared_dir="resources/prepared",
              hparams_dir="config/hparams") -> pd.DataFrame:
    dev = pick_device(device)
    scenario = Scenario(get_benchmark(benchmark), prepared_dir, dev)
    rows = [bench_method(scenario, m, buffer_size, steps, warmup, repeats, hparams_dir) for m in methods]
    return pd.DataFrame(rows, columns=BENCH_SCHEMA.names)
