"""Conformance: every registered method meets the protocol's invariants on a tiny 3-task benchmark, so a new
method is checked the moment it is registered (docs/protocol.md#conformance).

Per method: its losses are finite; a run stopped after task 1 and resumed from its checkpoint ends with
bit-identical metrics to an uninterrupted run, and a second uninterrupted run with the same seed too (CPU);
evaluation changes no parameter, BN statistic, buffer entry or random-generator state; a replay buffer never
holds more examples than its size; `state_dict` round-trips. A method that cannot meet an invariant declares
it in its class's `conformance_exceptions` ({invariant: reason}), in its own file.

The benchmark is fabricated here (6 classes of 32x32 RGB images with saliency maps, 24 training images per
task): a ResNet-18 of width 4 for the classifiers, one optimiser step per 8 images, one epoch. Pretrained inputs
of the families (SER's saliency predictor) are made here too, untrained; WSCL dreams of the benchmark's own
training images.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from clcore.data.prepared import write_prepared
from clcore.hparams import make_hparams, resolve
from clcore.methods import family_of, get_method, method_names
from clcore.methods.ser.saliency import SaliencyPredictor, save_predictor
from clcore.methods.wscl import DREAM_SOURCES, DreamSource
from clcore.results import load_metrics
from clcore.scenarios import BENCHMARKS, BenchmarkSpec
from clcore.train import _scenario, build_method, run_training
from helpers import killed_at_task

BENCHMARK = "conformance"
SPEC = BenchmarkSpec(BENCHMARK, "conformance", 3, 2, "resnet18", {"nf": 4}, crop_padding=2, hflip=True,
                     n_epochs=1, batch_size=8)
# the AR1 family needs its latent-layer split: the same benchmark on the embedded MobileNetV1
MOBILENET_SPEC = dataclasses.replace(SPEC, name="conformance-mobilenet", backbone="mobilenet_v1",
                                     backbone_options={"width": 0.25, "init_stride": 1}, crop_padding=0, hflip=False)
BUFFER = 10  # below the 24 images of a task: every buffer must choose
INVARIANTS = ("finite_losses", "resume", "same_seed", "evaluation_changes_nothing", "buffer_size",
              "state_dict_round_trip")
# the smallest protocol each method accepts: applied where the method has the field
TINY = dict(minibatch_size=8, iters=3, fc_units=16, fc_layers=2, z_dim=4, conv="scratch", c0=2, recon_loss="mse",
            n_fisher=16, val_dataset_size=2, freezing_buff_size=2, dream_per_class=4, inc_epochs=1, pretrained=False)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """The prepared tiny dataset, its benchmark registered, and the families' pretrained inputs."""
    root = tmp_path_factory.mktemp("conformance")
    rng = np.random.default_rng(0)
    splits = {}
    for split, per_class in (("train", 12), ("test", 4)):
        y = np.repeat(np.arange(6), per_class).astype(np.int16)
        colour = np.stack([(y * 40) % 256, (y * 90) % 256, (255 - y * 40) % 256], 1)[:, :, None, None]
        x = np.clip(colour + rng.normal(0, 30, (len(y), 3, 32, 32)), 0, 255).astype(np.uint8)
        sal = np.zeros((len(y), 1, 32, 32), np.uint8)
        for i, c in enumerate(y):  # one bright square per class position
            sal[i, 0, 4 * c:4 * c + 8, 8:16] = 255
        splits[split] = {"x": x, "y": y, "sal": sal}
    write_prepared(root / "prepared" / "conformance", "conformance", splits, {"pixel_max": 255})
    torch.manual_seed(0)
    save_predictor(root / "saliency_predictor.pt", SaliencyPredictor((3, 32, 32), nf=4, widths=(8, 8, 4)))
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(BENCHMARKS, BENCHMARK, SPEC)
        mp.setitem(BENCHMARKS, MOBILENET_SPEC.name, MOBILENET_SPEC)
        mp.setitem(DREAM_SOURCES, BENCHMARK, DreamSource("conformance", "train"))  # WSCL dreams of its own classes
        yield {"prepared": root / "prepared", "root": root,
               "artefacts": {"saliency_predictor": str(root / "saliency_predictor.pt")}}


def exceptions(method: str) -> dict:
    declared = getattr(get_method(method)[0], "conformance_exceptions", {})
    assert set(declared) <= set(INVARIANTS), f"{method} declares unknown invariants {set(declared) - set(INVARIANTS)}"
    assert all(isinstance(reason, str) and reason for reason in declared.values()), "every exception needs a reason"
    return declared


def skip_if_declared(method: str, invariant: str) -> None:
    reason = exceptions(method).get(invariant)
    if reason:
        pytest.skip(f"{method} declares: {reason}")


def spec_of(method: str) -> BenchmarkSpec:
    return MOBILENET_SPEC if family_of(method).name == "ar1" else SPEC


def hparams(method: str) -> tuple[int, dict]:
    cls, _ = get_method(method)
    fields = {f.name for f in dataclasses.fields(cls.Hparams)}
    buffer = BUFFER if cls.uses_buffer else 0
    return buffer, resolve(method, spec_of(method).name, buffer, {k: v for k, v in TINY.items() if k in fields})


def train(ws, method: str, out_dir, seed: int = 0) -> dict:
    buffer, hp = hparams(method)
    return run_training(spec_of(method).name, method, buffer, seed, hp, ws["prepared"], out_dir, device="cpu",
                        artefacts=ws["artefacts"])


def snapshot(method) -> dict:
    """Everything evaluation must leave as it was: parameters, BN statistics, buffers (the replay memory and the
    generator are in the method's extra state), and the global random generator."""
    state = {k: v.clone() if torch.is_tensor(v) else v for k, v in method.state_dict().items()}
    return {"state": state, "torch_rng": torch.get_rng_state()}


def assert_same(a, b, where: str) -> None:
    if torch.is_tensor(a):
        assert torch.is_tensor(b) and a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), f"{where}: keys {set(a) ^ set(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (u, v) in enumerate(zip(a, b)):
            assert_same(u, v, f"{where}[{i}]")
    else:
        assert a == b or (a != a and b != b), f"{where}: {a!r} != {b!r}"  # NaN == NaN here


@pytest.mark.parametrize("method", method_names())
def test_run_invariants(workspace, tmp_path, monkeypatch, method):
    """An uninterrupted run with evaluation and buffer checks; a run killed after task 1 and resumed; a second
    run with the same seed: finite losses, identical metrics."""
    import clcore.train

    cls, _ = get_method(method)
    declared = exceptions(method)
    evaluations, observed = [], []
    evaluate = clcore.train._evaluation_rows

    def checked_evaluation(model, scenario, after_task):
        before = snapshot(model)
        out = evaluate(model, scenario, after_task)
        if "evaluation_changes_nothing" not in declared:
            assert_same(before, snapshot(model), f"{method}: evaluation after task {after_task} changed")
        evaluations.append(after_task)
        return out

    def checked(hook):
        original = getattr(cls, hook)

        def wrapper(self, *args, **kwargs):
            out = original(self, *args, **kwargs)
            if self.buffer is not None:
                observed.append(len(self.buffer))
                assert len(self.buffer) <= self.ctx.buffer_size, f"{method}: {len(self.buffer)} > {self.ctx.buffer_size}"
            return out

        return wrapper

    with monkeypatch.context() as mp:
        mp.setattr(clcore.train, "_evaluation_rows", checked_evaluation)
        if "buffer_size" not in declared:
            for hook in ("observe", "end_task"):
                mp.setattr(cls, hook, checked(hook))
        train(workspace, method, tmp_path / "full")
    reference = load_metrics(tmp_path / "full" / "metrics.parquet")
    assert evaluations[-3:] == [0, 1, 2]
    if cls.uses_buffer and "buffer_size" not in declared:
        assert observed and max(observed) > 0, f"{method} never stored anything"
    if "finite_losses" not in declared:
        losses = reference[reference.metric.str.startswith("loss/")]
        assert len(losses) and np.isfinite(losses.value).all(), f"{method}: non-finite losses"

    if "resume" not in declared:
        with killed_at_task(monkeypatch, cls, index=1), pytest.raises(KeyboardInterrupt):
            train(workspace, method, tmp_path / "resumed")
        assert (tmp_path / "resumed" / "checkpoint.pt").exists()
        info = train(workspace, method, tmp_path / "resumed")
        assert info["phases"]["resumed_at_task"] == [1]
        pd.testing.assert_frame_equal(load_metrics(tmp_path / "resumed" / "metrics.parquet"), reference,
                                      check_exact=True)
    if "same_seed" not in declared:
        train(workspace, method, tmp_path / "again")
        pd.testing.assert_frame_equal(load_metrics(tmp_path / "again" / "metrics.parquet"), reference,
                                      check_exact=True)


@pytest.mark.parametrize("method", method_names())
def test_state_dict_round_trips(workspace, method):
    """After task 1, a freshly built method loaded with the state holds the same state and predicts the same."""
    skip_if_declared(method, "state_dict_round_trip")
    cls, _ = get_method(method)
    buffer, values = hparams(method)
    hp = make_hparams(method, values)
    scenario, _ = _scenario(method, spec_of(method), workspace["prepared"], "cpu", workspace["artefacts"], hp, 0)
    torch.manual_seed(0)
    model = build_method(cls, hp, scenario, 0, buffer, workspace["artefacts"])
    task = scenario.task(0, model.stream_fields)
    model.begin_task(task)
    model.train_task(task)
    model.end_task(task)
    state = model.state_dict()
    torch.manual_seed(1)  # another initialisation: everything must come from the state
    fresh = build_method(cls, hp, scenario, 1, buffer, workspace["artefacts"])
    fresh.load_state_dict(state)
    assert_same(snapshot(model)["state"], snapshot(fresh)["state"], f"{method}: state after load")
    model.eval(), fresh.eval()
    x = scenario.transform.test(scenario.test_x)
    with torch.no_grad():
        assert torch.equal(model.predict(x), fresh.predict(x))
