"""The pipeline's run table and look-ups (clcore.pipeline), without Snakemake: run identity and sharing, the
pretrained inputs each family asks for, block rows and figures, robustness settings, experiment files."""

import copy
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from clcore.errors import CLError, UnknownNameError
from clcore.hparams import HparamError
from clcore.pipeline import Pipeline, experiment_blocks

REPO = Path(__file__).resolve().parents[1]
SCHEMA = str(REPO / "workflow/schemas/config.schema.yaml")


def config(*blocks, **top) -> dict:
    """A validated config (schema defaults filled in, as the Snakefile does) with these experiment blocks."""
    cfg = copy.deepcopy({"experiments": list(blocks), **top})
    cfg["experiments"] = experiment_blocks(cfg)
    validate(cfg, SCHEMA)
    cfg["paths"]["hparams"] = str(REPO / "config/hparams")
    return cfg


def block(id_, benchmarks, methods, seeds=(0,), **extra):
    return {"id": id_, "benchmarks": list(benchmarks), "methods": list(methods), "seeds": list(seeds), **extra}


def test_runs_shared_by_blocks_appear_once_with_every_block():
    pipe = Pipeline(config(block("a", ["seq-digits"], ["sgd", "er"], buffers=[50], seeds=[0, 1]),
                           block("b", ["seq-digits"], ["er"], buffers=[50, 100], seeds=[1])))
    assert sorted(pipe.runs) == [("seq-digits", "er", 50, 0), ("seq-digits", "er", 50, 1), ("seq-digits", "er", 100, 1),
                                 ("seq-digits", "sgd", 0, 0), ("seq-digits", "sgd", 0, 1)]
    assert pipe.run("seq-digits", "er", "50", "1").experiments == ["a", "b"]
    assert {(r["run_name"], r["buffer_size"], r["n_seeds_expected"]) for r in pipe.expected_runs()} == {
        ("er", 50, 2), ("er", 100, 1), ("sgd", 0, 2)}
    rows = {(r["run_name"], r["buffer_size"]): r["seeds"] for r in pipe.block_rows("b")}
    assert rows == {("er", 50): [1], ("er", 100): [1]}
    assert pipe.run_files("run.json", pipe.block_runs("b")) == [
        "results/runs/seq-digits/er/buf50/seed1/run.json", "results/runs/seq-digits/er/buf100/seed1/run.json"]
    assert pipe.benchmarks_using("digits") == ["seq-digits"]


def test_overrides_name_runs_and_are_type_checked_before_any_job():
    pipe = Pipeline(config(block("a", ["seq-digits"], ["er"], buffers=[50], overrides={"er": {"lr": "1e-3"}})))
    (run,) = pipe.runs.values()
    assert run.hparams["lr"] == 0.001 and isinstance(run.hparams["lr"], float)
    same = Pipeline(config(block("a", ["seq-digits"], ["er"], buffers=[50], overrides={"er": {"lr": 0.001}})))
    assert run.name.startswith("er-h") and list(same.runs.values())[0].name == run.name
    with pytest.raises(HparamError, match=r"'lr' of 'er' = 'abc' \(from experiment 'a' overrides\): expected a number"):
        Pipeline(config(block("a", ["seq-digits"], ["er"], buffers=[50], overrides={"er": {"lr": "abc"}})))
    with pytest.raises(UnknownNameError, match="Did you mean 'derpp'"):
        Pipeline(config(block("a", ["seq-digits"], ["derp"], buffers=[50])))
    with pytest.raises(ValueError, match="needs a buffer"):
        Pipeline(config(block("a", ["seq-digits"], ["er"])))


def test_task_il_blocks_name_their_runs_and_refuse_one_head_methods():
    pipe = Pipeline(config(block("t", ["seq-digits"], ["bir"], scenario="task")))
    (run,) = pipe.runs.values()
    assert run.name == "bir-task" and run.hparams["scenario"] == "task"
    assert pipe.figure_options("t")["setting"] == "task_il" and pipe.figure_options("t")["chance"] == {"seq-digits": 50.0}
    with pytest.raises(ValueError, match="trains one head for both settings"):
        Pipeline(config(block("t", ["seq-digits"], ["sgd"], scenario="task")))


def test_each_family_names_the_pretrained_inputs_of_its_runs():
    pipe = Pipeline(config(block("ser", ["seq-shapes-ser"], ["derpp", "derpp_ser", "derpp_salinit"], buffers=[100]),
                           block("bir", ["seq-shapes", "seq-digits"], ["bir", "gr_none"])))
    inputs = lambda b, name, buf: {k: str(v) for k, v in pipe.artefact_inputs(pipe.run(b, name, buf, 0)).items()}  # noqa: E731
    assert inputs("seq-shapes-ser", "derpp", 100) == {}
    assert inputs("seq-shapes-ser", "derpp_ser", 100) == {
        "saliency_predictor": "results/saliency/shapes/saliency_predictor.pt",
        "pseudo_saliency": "results/saliency/shapes/pseudo/shapes/meta.json"}
    assert inputs("seq-shapes-ser", "derpp_salinit", 100) == {
        "saliency_predictor": "results/saliency/shapes/saliency_predictor.pt"}  # learns no maps: no pseudo maps
    conv = {"bir_conv": "results/pretrained/bir_conv/shapes/e20/conv.pt"}
    assert inputs("seq-shapes", "bir", 0) == conv and inputs("seq-shapes", "gr_none", 0) == conv
    assert inputs("seq-digits", "bir", 0) == {}  # conv: none on seq-digits (config/hparams/bir.yaml)
    upstream = Pipeline(config(block("bir", ["seq-shapes"], ["bir"]), bir_conv={"source": "upstream_file"}))
    assert str(upstream.artefact_inputs(upstream.run("seq-shapes", "bir", 0, 0))["bir_conv"]).endswith(
        "bir_conv/shapes/upstream/conv.pt")
    wrong = Pipeline(config(block("x", ["seq-digits"], ["derpp_ser"], buffers=[100])))
    with pytest.raises(CLError, match="benchmark 'seq-digits' has no saliency setting: derpp_ser cannot run on it"):
        wrong.artefact_inputs(wrong.run("seq-digits", "derpp_ser", 100, 0))


def test_block_figures_and_robustness_settings():
    pipe = Pipeline(config(
        block("clean", ["seq-shapes-ser"], ["er_ace", "er_ace_ser"], buffers=[100], robust_eval={"n_per_class": 20}),
        block("sf", ["seq-shapes-ser", "seq-shapes-ser-spurious"], ["er_ace"], buffers=[100],
              robust_eval={"n_per_class": 5}),
        block("base", ["seq-digits"], ["sgd"], figures=["ablation_bars"])))
    assert pipe.block_figures("clean") == ["accuracy_curve", "forgetting", "saliency"]  # er_ace_ser logs saliency
    assert pipe.block_figures("base") == ["accuracy_curve", "forgetting", "ablation_bars"]
    assert pipe.robust_blocks() == ["clean", "sf"]
    clean = pipe.run("seq-shapes-ser", "er_ace", 100, 0)  # in both blocks: the first block's settings
    assert pipe.robust_settings(clean)["n_per_class"] == 20 and pipe.robust_settings(clean)["conflict"] is True
    assert pipe.robust_settings(pipe.run("seq-shapes-ser", "er_ace_ser", 100, 0))["conflict"] is None
    assert pipe.keeps_final(clean) and not pipe.keeps_final(pipe.run("seq-digits", "sgd", 0, 0))
    assert [p.name for p in pipe.robustness_table_targets("t")] == ["clean.md", "clean.csv", "sf.md", "sf.csv"]
    assert len(pipe.experiment_figure_targets("f")) == 2 * (3 + 2 + 3)


def test_experiment_files_add_their_blocks_and_ids_stay_unique(tmp_path):
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({"experiments": [block("s", ["seq-digits"], ["sgd"])]}))
    pipe = Pipeline(config(block("a", ["seq-digits"], ["er"], buffers=[50]), experiment_files=[str(study)]))
    assert list(pipe.blocks) == ["a", "s"] and pipe.block("s")["spread"] == "std"  # schema defaults filled in
    with pytest.raises(ValueError, match=r"unique; repeated: \['s'\]"):
        Pipeline(config(block("s", ["seq-digits"], ["er"], buffers=[50]), experiment_files=[str(study)]))
    with pytest.raises(ValueError, match="no experiment blocks"):
        Pipeline(config())


def test_every_shipped_config_builds_its_run_table():
    """The default, each family's embedded study, all of them, and the paper grid resolve without errors."""
    base = yaml.safe_load((REPO / "config/config.yaml").read_text())
    for path in ["config/config.yaml", *sorted(str(p.relative_to(REPO)) for p in (REPO / "config/embedded").glob("*.yaml")),
                 "config/paper.yaml"]:
        cfg = {**base, **yaml.safe_load((REPO / path).read_text())}
        cfg["experiment_files"] = [str(REPO / f) for f in cfg.get("experiment_files", [])]
        pipe = Pipeline(config(*cfg["experiments"], experiment_files=cfg["experiment_files"]))
        assert pipe.runs, path
        for run in pipe.runs.values():
            pipe.artefact_inputs(run)  # every run's family knows where its inputs come from


def test_wscl_runs_wait_for_their_dream_set_and_fail_where_there_is_none():
    pipe = Pipeline(config(block("w", ["seq-cifar10", "seq-digits"], ["er_ace_wscl", "er_ace_wscl_nodream"],
                                 buffers=[200])))
    prepared = lambda b, name: [p.parent.name for p in pipe.prepared_inputs(pipe.run(b, name, 200, 0))]  # noqa: E731
    assert prepared("seq-cifar10", "er_ace_wscl") == ["cifar10", "cifar100"]  # CIFAR-100's superclasses
    assert prepared("seq-cifar10", "er_ace_wscl_nodream") == ["cifar10"]
    assert pipe.artefact_inputs(pipe.run("seq-digits", "er_ace_wscl_nodream", 200, 0)) == {}
    with pytest.raises(CLError, match="'seq-digits' has no dream source"):
        pipe.artefact_inputs(pipe.run("seq-digits", "er_ace_wscl", 200, 0))
    assert pipe.family_blocks("wscl") == ["w"] and pipe.family_blocks("ser") == []


def test_pairs_may_name_a_method_trained_under_the_blocks_overrides():
    pipe = Pipeline(config(block("p", ["seq-digits"], ["sgd", "er"], buffers=[50], pairs=[["er", "sgd"]],
                                 overrides={"er": {"lr": 0.05}})))
    (pair,) = pipe.block("p")["pairs"]
    assert pair[0].startswith("er-h") and pair[1] == "sgd"
    with pytest.raises(CLError, match="names runs the block does not have"):
        Pipeline(config(block("p", ["seq-digits"], ["sgd"], pairs=[["er", "sgd"]])))
