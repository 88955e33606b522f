"""The training loop: exact resume, the adversarial labels, and non-finite losses.

Every run here is smoke-size (8 generated source images of 64x32, a width-8
DeepLab) on the CPU with fixed seeds, so runs are bit-for-bit repeatable.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from fixtures_data import demo_setup
from uncerda_core.artifacts import UncerdaError
from uncerda_core.runtime import load_checkpoint
from uncerda_core.train import guards, losses, loop
from uncerda_core.train.checkpoint import resume_path
from uncerda_core.train.loop import NonFiniteLoss, run_training, stage_settings

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Demo data (8 source, 4 target train images) with both indexes, and a smoke config."""
    root = tmp_path_factory.mktemp("train_data")
    config, source, target = demo_setup(root, 8, 4, 2, "train", {
        "train": {"checkpoint_every": 2},
        "source_only": {"iterations": 6}, "adapt": {"iterations": 5, "image_translation": True}})
    return {"root": root, "config": config, "source": source, "target": target}


def _train(data, stage: str, out: Path, config: dict | None = None, **kwargs):
    config = config or data["config"]
    return run_training(config, stage_settings(config, stage), out, seed=0, source_dataset="gta5",
                        source_index=data["source"], losses_csv=out.with_name("losses.csv"), progress=False,
                        **kwargs)


def _assert_same_state(a: dict, b: dict, path: str = "") -> None:
    """Recursive torch.equal over the tensors (and == over the rest) of two state dicts."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            _assert_same_state(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_state(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


def _compare_runs(full: Path, resumed: Path) -> None:
    a, b = load_checkpoint(full), load_checkpoint(resumed)
    for key in ("model", "discriminators", "optimizers", "schedulers", "iteration", "losses"):
        _assert_same_state(a[key], b[key], key)
    assert (full.parent / "losses.csv").read_bytes() == (resumed.parent / "losses.csv").read_bytes()


@pytest.fixture(scope="module")
def source_only_full(data):
    out = data["root"] / "so_full" / "checkpoint.pt"
    result = _train(data, "source_only", out)
    assert result["iterations"] == 6
    return out


def test_source_only_resume_is_exact(data, source_only_full, capsys):
    out = data["root"] / "so_resumed" / "checkpoint.pt"
    # Stopped after the checkpoint at iteration 2, as a kill would leave it.
    assert _train(data, "source_only", out, stop_after=2) == {"stopped_at": 2}
    assert not out.exists()
    assert load_checkpoint(resume_path(out))["iteration"] == 2
    # Resumed, stopped again at 4, resumed to the end.
    assert _train(data, "source_only", out, stop_after=4) == {"stopped_at": 4}
    assert "resuming from" in capsys.readouterr().err
    result = _train(data, "source_only", out)
    assert result["iterations"] == 6
    assert f"resuming from {resume_path(out)} at iteration 4" in capsys.readouterr().err
    assert not resume_path(out).exists()
    _compare_runs(source_only_full, out)
    rows = load_checkpoint(out)["losses"]
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4, 5, 6]      # log_every = 1 at 6 iterations


def test_adversarial_stage_with_fda_resume_is_exact(data, source_only_full, capsys):
    settings = stage_settings(data["config"], "aa")
    assert settings.adversarial and settings.image_translation
    kwargs = dict(target_index=data["target"], init=source_only_full)
    full = data["root"] / "aa_full" / "checkpoint.pt"
    resumed = data["root"] / "aa_resumed" / "checkpoint.pt"
    _train(data, "aa", full, **kwargs)
    assert _train(data, "aa", resumed, stop_after=2, **kwargs) == {"stopped_at": 2}
    assert _train(data, "aa", resumed, **kwargs)["iterations"] == 5
    assert "at iteration 2" in capsys.readouterr().err
    _compare_runs(full, resumed)
    state = load_checkpoint(full)
    assert set(state["discriminators"]) == {"aux", "main"}
    assert set(state["optimizers"]) == {"model", "disc_aux", "disc_main"}
    assert {"adv_main", "adv_aux", "d_aux", "d_main"} <= set(state["losses"][0])


def test_resume_file_from_other_settings_is_not_used(data, capsys):
    out = data["root"] / "other" / "checkpoint.pt"
    _train(data, "source_only", out, stop_after=2)
    config = copy.deepcopy(data["config"])
    config["train"]["lr"] = 0.005
    capsys.readouterr()
    _train(data, "source_only", out, config=config, stop_after=2)
    err = capsys.readouterr().err
    assert "written with other settings: starting over" in err and "resuming" not in err


class _Recorder:
    """Records the domain label of every adversarial loss, the input size, and whether the
    discriminator was trainable at that moment."""

    def __init__(self, monkeypatch):
        self.calls: list[tuple[float, tuple[int, int], bool]] = []
        self.current: tuple[tuple[int, int], bool] | None = None
        real_disc, real_loss = loop.FCDiscriminator, losses.adversarial_loss
        recorder = self

        class Disc(real_disc):
            def forward(self, x):
                recorder.current = (tuple(x.shape[-2:]), next(self.parameters()).requires_grad)
                return super().forward(x)

        def adversarial_loss(logits, label):
            recorder.calls.append((label, *recorder.current))
            return real_loss(logits, label)

        monkeypatch.setattr(loop, "FCDiscriminator", Disc)
        monkeypatch.setattr(losses, "adversarial_loss", adversarial_loss)


def test_generator_fools_with_the_source_label_and_discriminator_learns_both(data, source_only_full,
                                                                             monkeypatch):
    # Source images are fed at 128x64, target images at 64x32: the input size tells the domain.
    config = copy.deepcopy(data["config"])
    config["source"]["resize"] = [128, 64]
    config["adapt"]["iterations"] = 2
    config["adapt"]["image_translation"] = False
    rec = _Recorder(monkeypatch)
    _train(data, "aa", data["root"] / "labels" / "checkpoint.pt", config=config, target_index=data["target"],
           init=source_only_full)
    src, tgt = (64, 128), (32, 64)
    S, T = losses.SOURCE_LABEL, losses.TARGET_LABEL
    one_iteration = [
        (S, tgt, False), (S, tgt, False),      # generator: target predictions must pass for source
        (S, src, True), (T, tgt, True),        # discriminator aux: source -> 0, target -> 1
        (S, src, True), (T, tgt, True),        # discriminator main
    ]
    assert rec.calls == one_iteration * 2


def test_lambda_adv_zero_control_skips_the_discriminators_and_trains_the_same_network(data, source_only_full,
                                                                                       monkeypatch):
    """The lambda_adv = 0 control builds no discriminator, yet ends with the weights, BatchNorm
    averages and optimiser state of a run that computes the zero-weighted adversarial loss and
    trains both discriminators beside it."""
    settings = stage_settings(data["config"], "aa", adversarial_weight=0.0)
    assert settings.adversarial and not settings.discriminated
    assert stage_settings(data["config"], "aa").discriminated

    def run(name: str) -> dict:
        out = data["root"] / name / "checkpoint.pt"
        run_training(data["config"], settings, out, seed=0, source_dataset="gta5", source_index=data["source"],
                     target_index=data["target"], init=source_only_full, losses_csv=out.with_name("losses.csv"),
                     progress=False)
        return load_checkpoint(out)

    skipped = run("noadv_skip")
    with monkeypatch.context() as m:   # the discriminator path, taken as if lambda_adv were above 0
        m.setattr(loop.StageSettings, "discriminated", property(lambda s: s.adversarial))
        computed = run("noadv_computed")
    assert skipped["discriminators"] == {} and set(computed["discriminators"]) == {"aux", "main"}
    _assert_same_state(skipped["model"], computed["model"], "model")
    _assert_same_state(skipped["optimizers"]["model"], computed["optimizers"]["model"], "optimizer")
    assert [r["seg"] for r in skipped["losses"]] == [r["seg"] for r in computed["losses"]]
    assert "adv_main" not in skipped["losses"][0] and "adv_main" in computed["losses"][0]


def test_non_finite_loss_stops_with_stage_and_iteration_and_keeps_the_checkpoint(data, source_only_full,
                                                                                  monkeypatch):
    out = data["root"] / "nan" / "checkpoint.pt"
    real = losses.segmentation_loss
    calls = {"n": 0}

    def poisoned(logits, labels, **kwargs):
        calls["n"] += 1                        # two calls (main, aux) per iteration
        loss = real(logits, labels, **kwargs)
        return loss * math.nan if calls["n"] == 5 else loss     # the main head at iteration 3

    monkeypatch.setattr(losses, "segmentation_loss", poisoned)
    with pytest.raises(NonFiniteLoss, match=r"stage source_only: non-finite loss at iteration 3 \(seg=nan") as info:
        _train(data, "source_only", out)
    assert isinstance(info.value, UncerdaError)
    assert str(resume_path(out)) in str(info.value)
    assert not out.exists()
    assert load_checkpoint(resume_path(out))["iteration"] == 2         # the last good checkpoint
    monkeypatch.setattr(losses, "segmentation_loss", real)
    # Nothing lost: the rerun resumes there and ends where an uninterrupted run ends.
    _train(data, "source_only", out)
    _compare_runs(source_only_full, out)


def test_huge_learning_rate_fails_through_the_command(data, capsys, tmp_path):
    from uncerda_core.cli import main
    import yaml
    cfg = tmp_path / "lr.yaml"
    cfg.write_text(yaml.safe_dump({"train": {"lr": 1.0e30}, "source_only": {"iterations": 6}}))
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({k: data["config"][k] for k in ("device", "threads", "source", "target",
                                                                    "model", "train")}))
    out = tmp_path / "m" / "checkpoint.pt"
    code = main(["train-source", "--config", str(base), "--config", str(cfg), "--source-index", str(data["source"]),
                 "--out", str(out), "--losses", str(tmp_path / "m" / "losses.csv")])
    err = capsys.readouterr().err
    assert code == 2
    assert "uncerda train-source: error: stage source_only: non-finite loss at iteration" in err
    assert not out.exists()


def test_divergence_guard_needs_three_logged_rows_above_100_log_c():
    guard = guards.DivergenceGuard(19)
    assert guard.limit == pytest.approx(100 * math.log(19))            # 294.4
    above, below = {"seg": 300.0, "seg_aux": 1.0}, {"seg": 290.0, "seg_aux": 295.0}
    assert [guard.observe(r) for r in (above, above, {"seg": 3.0}, above, above)] == [True] * 5   # a dip resets
    assert guard.observe(below) is False                              # any cross-entropy term counts (seg_aux)
    calm = guards.DivergenceGuard(19)
    assert all(calm.observe({"seg": 290.0, "adv_main": 1e6, "d_main": 1e6}) for _ in range(10))  # BCE terms ignored


def test_a_run_that_diverges_without_nan_stops_early_with_the_causes(data, tmp_path):
    """Learning rate 3 on the smoke model: the loss jumps to hundreds and thousands (log 19 = 2.9) but stays
    finite; before, the run finished and wrote its checkpoint."""
    config = copy.deepcopy(data["config"])
    config["train"].update(lr=3.0, checkpoint_every=100)
    config["source_only"]["iterations"] = 20
    out = tmp_path / "diverged" / "checkpoint.pt"
    with pytest.raises(guards.TrainingDiverged) as info:
        _train(data, "source_only", out, config=config)
    msg = str(info.value)
    assert msg.startswith("stage source_only: training diverged at iteration ")
    assert int(msg.split("iteration ", 1)[1].split(":", 1)[0]) < 20            # stopped early
    for cause in ("model.init", "train.normalize", "model.bn_mode", "train.lr"):
        assert cause in msg
    assert msg.index("model.init") < msg.index("train.lr")                     # the learning rate comes last
    assert not out.exists()


def test_stage_settings(data):
    config = data["config"]
    so = stage_settings(config, "source_only")
    assert (so.iterations, so.adversarial, so.image_translation) == (6, False, False)
    aa = stage_settings(config, "aa", image_translation=False, adversarial_weight=0.0)
    assert aa.adversarial and not aa.image_translation and aa.lambda_adv_main == 0.0 and aa.lambda_adv_aux == 0.0
    aa = stage_settings(config, "aa")
    assert aa.lambda_adv_main == config["adapt"]["lambda_adv_main"] and aa.fda_beta == config["adapt"]["fda_beta"]
    st = stage_settings(config, "st")
    assert st.self_training and st.st_loss == "rectified" and st.st_lambda_aux == config["selftrain"]["lambda_aux"]
    with pytest.raises(UncerdaError, match="unknown training stage 'bogus'"):
        stage_settings(config, "bogus")


def test_stage_settings_come_complete_from_the_config(data):
    """No default of the settings dataclass stands in for the schema's: every field is built from the config."""
    from dataclasses import MISSING, fields

    from uncerda_core.train.loop import StageSettings

    assert [f.name for f in fields(StageSettings) if f.default is not MISSING or f.default_factory is not MISSING] == []
    config = {**data["config"], "adapt": {**data["config"]["adapt"], "fda_beta": 0.123, "disc_ndf": 5}}
    for stage in ("source_only", "oracle", "aa", "tgaa", "st"):
        settings = stage_settings(config, stage)
        assert (settings.fda_beta, settings.disc_ndf) == (0.123, 5), stage
        assert settings.poly_horizon == config["train"]["poly_horizon"]
    assert stage_settings(config, "tgaa").sampling == config["tgaa"]["sampling"]
    assert stage_settings(config, "source_only").sampling == "image"


def test_adversarial_stage_needs_the_target_index(data):
    with pytest.raises(UncerdaError, match="needs the target index"):
        _train(data, "aa", data["root"] / "no_target" / "checkpoint.pt")


def test_focus_weights_are_eq4_numerators_over_sk(tmp_path):
    """Crop-level sampling: per image, N_c(x)^(1-balance) for the S_k classes present, 0 elsewhere."""
    import numpy as np
    import pandas as pd
    from uncerda_core.data.labels import CLASS_NAMES

    rows = {"name": ["b", "a"]}
    for c, cls in enumerate(CLASS_NAMES):
        rows[cls] = [0, 0]
    rows[CLASS_NAMES[0]] = [9, 4]
    rows[CLASS_NAMES[3]] = [0, 16]
    rows[CLASS_NAMES[5]] = [25, 1]          # not in S_k
    stats = tmp_path / "class_stats.csv"
    pd.DataFrame(rows).to_csv(stats, index=False)
    focus = loop.crop_focus_weights(stats, ["a", "b"], sk=[0, 3], balance=0.5)
    expected = np.zeros((2, len(CLASS_NAMES)))
    expected[0, 0], expected[0, 3] = 2.0, 4.0     # image a: sqrt(4), sqrt(16)
    expected[1, 0] = 3.0                          # image b: sqrt(9); class 3 absent
    np.testing.assert_allclose(focus, expected)


def test_unequal_discriminator_grids_are_warned_about(data, source_only_full, capsys):
    """Source resized to 128x64 against 64x32 target images: the discriminator's outputs are 2x4 and 1x2
    cells, and the log says so once, naming the fix; equal sizes (the other adversarial tests) say nothing."""
    config = copy.deepcopy(data["config"])
    config["source"]["resize"] = [128, 64]
    config["adapt"]["iterations"] = 2
    config["adapt"]["image_translation"] = False
    _train(data, "aa", data["root"] / "grids" / "checkpoint.pt", config=config, target_index=data["target"],
           init=source_only_full)
    err = capsys.readouterr().err
    assert err.count("warning: the discriminator sees") == 1
    assert "source inputs of 64x128 pixels (2x4 output cells) and target inputs of 32x64 (1x2 cells)" in err
    assert "source.crop" in err
    config["source"]["resize"] = None
    _train(data, "aa", data["root"] / "grids_equal" / "checkpoint.pt", config=config, target_index=data["target"],
           init=source_only_full)
    assert "warning: the discriminator" not in capsys.readouterr().err


def test_warn_unequal_grids_only_when_the_grids_differ(capsys):
    assert not loop.warn_unequal_grids("aa", (512, 1024), (512, 1024), (16, 32), (16, 32))
    assert capsys.readouterr().err == ""
    assert loop.warn_unequal_grids("aa", (48, 96), (64, 128), (1, 3), (2, 4))
    assert "[aa] warning" in capsys.readouterr().err


def test_the_focal_loss_reaches_only_the_adaptation_stage_that_asks_for_it():
    from uncerda_core.config import load_config
    config = load_config(Path(__file__).resolve().parent.parent / "config.yaml", check_paths=False)
    assert config["adapt"]["source_loss"] == "cross_entropy" and config["adapt"]["focal_gamma"] == 2.0
    assert stage_settings(config, "tgaa").source_focal_gamma == 0.0
    assert stage_settings(config, "tgaa", source_loss="focal").source_focal_gamma == 2.0
    assert stage_settings(config, "st", source_loss="focal").source_focal_gamma == 0.0   # not an adaptation stage
    focal = {**config, "adapt": {**config["adapt"], "source_loss": "focal", "focal_gamma": 1.5}}
    assert stage_settings(focal, "aa").source_focal_gamma == 1.5
    assert stage_settings(focal, "aa", source_loss="cross_entropy").source_focal_gamma == 0.0


def test_memory_regularisation_reaches_only_adaptation_and_starts_at_its_share():
    from uncerda_core.config import load_config
    config = load_config(Path(__file__).resolve().parent.parent / "config.yaml", check_paths=False)
    assert config["adapt"]["memory_weight"] == 0.0      # UncerDA's own chain: off
    assert config["table5"]["mrnet_memory_weight"] == 0.1
    mr = {**config, "adapt": {**config["adapt"], "memory_weight": 0.1, "memory_start": 0.6, "iterations": 25}}
    settings = stage_settings(mr, "aa")
    assert (settings.memory_weight, settings.memory_start, settings.memory_aux_weight) == (0.1, 15, 0.5)
    assert settings.target_loss
    assert stage_settings(mr, "st").memory_weight == 0.0            # not an adaptation stage
    assert stage_settings(mr, "aa", adversarial_weight=0.0).target_loss   # the term alone still trains on target
    assert not stage_settings(config, "aa", adversarial_weight=0.0).target_loss


def test_memory_regularisation_trains_from_its_start(data, source_only_full):
    """Four iterations (one loss row each), the term from the third: logged as 0 before, positive after;
    with the adversarial weight 0 the target batches then change the weights (without the term they would not)."""
    def run(name: str, memory_weight: float) -> dict:
        config = copy.deepcopy(data["config"])
        config["adapt"].update(iterations=4, image_translation=False, memory_weight=memory_weight, memory_start=0.5)
        out = data["root"] / name / "checkpoint.pt"
        run_training(config, stage_settings(config, "aa", adversarial_weight=0.0), out, seed=0,
                     source_dataset="gta5", source_index=data["source"], target_index=data["target"],
                     init=source_only_full, losses_csv=out.with_name("losses.csv"), progress=False)
        return pd.read_csv(out.with_name("losses.csv"))

    with_term, plain = run("memory", 0.1), run("memory_off", 0.0)
    assert list(with_term["iteration"]) == [1, 2, 3, 4]
    memory = list(with_term["memory"])
    assert memory[:2] == [0.0, 0.0] and all(v > 0 for v in memory[2:])
    assert "memory" not in plain
    # identical until the term's first step (iteration 3) has acted, different after
    assert list(with_term["seg"][:3]) == list(plain["seg"][:3])
    assert with_term["seg"][3] != plain["seg"][3]


@pytest.mark.parametrize("pixel_weights, mic", [("confidence", False), ("gmm", False), ("gmm", True)])
def test_online_self_training_trains_without_a_pseudo_folder_and_resumes_exactly(data, source_only_full, pixel_weights,
                                                                               mic):
    """selftrain.mode online, 6 iterations: the EMA teacher labels the batches (no pseudo-label folder), the
    pixel weights are logged; stopped after iteration 2 and resumed, the weights, teacher and losses are those
    of the uninterrupted run bit for bit. gmm refits every 2 iterations on a small record."""
    config = copy.deepcopy(data["config"])
    config["selftrain"].update(iterations=6, mode="online")
    config["selftrain"]["online"].update(pixel_weights=pixel_weights, gmm_refit_every=2, gmm_record=500,
                                         gmm_per_step=100, gmm_min_pixels=5, mic=mic, mic_block=8)
    settings = stage_settings(config, "st")
    assert settings.st_mode == "online"

    def run(name: str, **kwargs):
        out = data["root"] / f"online_{pixel_weights}_{mic}_{name}" / "checkpoint.pt"
        result = run_training(config, settings, out, seed=0, source_dataset="gta5", source_index=data["source"],
                              target_index=data["target"], init=source_only_full, losses_csv=out.with_name("losses.csv"),
                              progress=False, **kwargs)
        return out, result

    full, _ = run("full")
    resumed, stopped = run("resumed", stop_after=2)
    assert stopped == {"stopped_at": 2}
    run("resumed")
    _compare_runs(full, resumed)
    a, b = load_checkpoint(full), load_checkpoint(resumed)
    rows = pd.read_csv(full.with_name("losses.csv"))
    assert rows["pl_weight"].between(0, 1).all() and rows["st"].notna().all()
    assert ("mic" in rows) == mic and (not mic or (rows["mic"] >= 0).all())
    # the total: the source loss, the mixed batch's and (MIC) the masked image's
    source = config["selftrain"]["source_weight"] * (rows["seg"] + config["train"]["lambda_seg_aux"] * rows["seg_aux"])
    expected = source + rows["st"] + (rows["mic"] if mic else 0.0)
    assert rows["total"].to_numpy() == pytest.approx(expected.to_numpy(), rel=1e-5)
    assert not torch.equal(a["model"]["head_main.branches.0.weight"],
                           load_checkpoint(source_only_full)["model"]["head_main.branches.0.weight"])
    with pytest.raises(UncerdaError, match="pseudo-label folder"):
        offline = copy.deepcopy(config)
        offline["selftrain"]["mode"] = "offline"
        run_training(offline, stage_settings(offline, "st"), data["root"] / "offline" / "c.pt", seed=0,
                     source_dataset="gta5", source_index=data["source"], target_index=data["target"],
                     init=source_only_full, progress=False)
    assert b["iteration"] == 6


def test_online_chain_draws_reach_the_source_stream_and_a_mismatched_weights_file_is_refused(data, source_only_full,
                                                                                          monkeypatch):
    """selftrain.online.source_draws: chain hands the weights file's probabilities (in the index's order) to the
    source stream, with tgaa.sampling's level; uniform draws refuse a weights file, chain draws refuse to run
    without one, offline self-training refuses one, each before any output is written."""
    from uncerda_core.data.index import read_index
    seen = {}

    class RecordingStream(loop.BatchStream):
        def __init__(self, n_items, batch_size, seed, stream, probabilities=None, *args, **kwargs):
            super().__init__(n_items, batch_size, seed, stream, probabilities, *args, **kwargs)
            seen.setdefault(stream, self.probabilities)

    monkeypatch.setattr(loop, "BatchStream", RecordingStream)
    config = copy.deepcopy(data["config"])
    config["selftrain"].update(iterations=1, mode="online")
    config["selftrain"]["online"]["source_draws"] = "chain"
    settings = stage_settings(config, "st")
    assert settings.chain_draws and settings.sampling == config["tgaa"]["sampling"]
    names = list(read_index(data["source"])["name"])
    weights = data["root"] / "chain_weights.csv"
    # written in reverse order, so the test sees the loop match names rather than rows
    pd.DataFrame({"name": names[::-1], "probability": [float(i + 1) for i in range(len(names))][::-1]}).to_csv(
        weights, index=False)

    def run(cfg, name, **kwargs):
        out = data["root"] / name / "checkpoint.pt"
        run_training(cfg, stage_settings(cfg, "st"), out, seed=0, source_dataset="gta5", source_index=data["source"],
                     target_index=data["target"], init=source_only_full, progress=False, **kwargs)
        return out

    assert run(config, "online_chain", weights=weights).is_file()
    expected = [i + 1.0 for i in range(len(names))]
    assert seen[loop.SOURCE_STREAM] == pytest.approx([p / sum(expected) for p in expected])
    assert seen[loop.TARGET_STREAM] is None
    with pytest.raises(UncerdaError, match="source_draws is chain"):
        run(config, "chain_without_weights")
    for mode, draws in (("online", "uniform"), ("offline", "chain")):
        other = copy.deepcopy(config)
        other["selftrain"]["mode"] = mode
        other["selftrain"]["online"]["source_draws"] = draws
        assert not stage_settings(other, "st").chain_draws and stage_settings(other, "st").sampling == "image"
        with pytest.raises(UncerdaError, match="chain_weights.csv: self-training draws its source images uniformly"):
            run(other, f"{mode}_with_weights", weights=weights, pseudo_dir=data["root"])
    assert not any((data["root"] / n).exists() for n in ("chain_without_weights", "online_with_weights",
                                                         "offline_with_weights"))
