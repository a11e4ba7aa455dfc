"""The recipes' command line: settings visible in --help, bad settings rejected in one line."""

from __future__ import annotations

import importlib.util
import re
import time

import pytest
import torch
import yaml

from impala_lit.agent.networks import fastest_precision

from .conftest import ROOT, run_recipe, run_recipe_in_process


def native_bf16_cpu() -> bool:
    """Read from the kernel, independently of torch's probes."""
    with open("/proc/cpuinfo") as cpuinfo:
        flags = set(cpuinfo.read().split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


HYPERPARAMETERS = {
    # name in --help: default shown for recipes/pong.py
    "--data.env_id": "ALE/Pong-v5",
    "--data.num_workers": "2",
    "--data.envs_per_worker": "32",
    "--data.unroll_length": "40",
    "--data.batch_size": "32",
    "--data.frame_skip": "4",
    "--data.noop_max": "30",
    "--data.frame_stack": "1",
    "--data.clip_rewards": "True",
    "--data.episodic_life": "False",
    "--data.sticky_actions": "0.0",
    "--model.network": "shallow",
    "--model.core": "lstm",
    "--model.core_size": "256",
    "--model.core_norm": "True",
    "--model.discount": "0.99",
    "--model.rho_thresh": "1.0",
    "--model.c_thresh": "1.0",
    "--model.baseline_cost": "0.5",
    "--model.entropy_cost": "0.0006",
    "--model.lr": "0.0006",
    "--model.rms_alpha": "0.99",
    "--model.rms_eps": "0.03",
    "--model.rms_init": "1.0",
    "--model.optimizer": "rmsprop",
    "--model.adam_eps": "1e-08",
    "--model.loss_reduction": "sum",
    "--model.lr_decay": "False",
    "--model.lr_decay_frames": "null",
    "--model.max_frames": "28000000",
    "--model.clip_range": "0.2",  # Pong's default learner is APPOModule
    "--model.normalize_advantage": "False",
    "--model.num_minibatches": "4",
    "--data.replay_ratio": "0.0",
    "--data.replay_capacity": "1024",
    "--data.replay_prioritized": "False",
    "--trainer.gradient_clip_val": "40.0",
    # the Pong recipe picks the precision that measured fastest on this kind of machine
    "--trainer.precision": "bf16-mixed" if native_bf16_cpu() and not torch.cuda.is_available() else "32-true",
    "--data.actor_precision": "bf16-mixed" if native_bf16_cpu() else "32-true",
    "--trainer.max_steps": "-1",
    "--ckpt_path": "null",
}


def test_no_recipe_hides_an_installed_package() -> None:
    """Python puts a script's folder first on sys.path: ``recipes/procgen.py`` would stand in for the
    procgen package that TorchRL imports, and every recipe would fail to start."""
    for recipe in sorted((ROOT / "recipes").glob("*.py")):
        assert importlib.util.find_spec(recipe.stem) is None, f"{recipe.name} hides the package {recipe.stem!r}"


def test_help_shows_every_hyperparameter_with_its_default(tmp_path) -> None:
    run = run_recipe("pong", ["fit", "--help"], tmp_path)
    assert run.returncode == 0, run.stderr
    text = re.sub(r"\s+", " ", run.stdout)
    for flag, default in HYPERPARAMETERS.items():
        # the option's own entry (not the usage line): the flag, its help, then "default: ..."
        match = re.search(r"(?<!\[)" + re.escape(flag) + r" (?:(?! --).)*?default: ([^)]*)\)", text)
        assert match, f"{flag} is missing from --help"
        if default is not None:
            assert match.group(1) == default, f"{flag}: default {match.group(1)!r}, expected {default!r}"


def test_fastest_precision_is_bf16_only_on_a_cpu_with_native_bf16(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert fastest_precision() == "32-true"  # bf16 would be emulated: slower than fp32
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert fastest_precision() == "bf16-mixed"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert fastest_precision() == "32-true"  # the H100 ran the Nature CNN faster in fp32


@pytest.mark.slow
def test_print_config_round_trips(tmp_path) -> None:
    run = run_recipe("cartpole", ["fit", "--print_config"], tmp_path)
    assert run.returncode == 0, run.stderr
    config = tmp_path / "config.yaml"
    config.write_text(run.stdout)
    again = run_recipe("cartpole", ["fit", f"--config={config}", "--print_config"], tmp_path)
    assert again.returncode == 0 and again.stdout == run.stdout


def test_a_bad_setting_ends_the_real_command_in_one_line(tmp_path, no_stray_workers) -> None:
    """The command as a user types it, in a fresh interpreter; the other cases run in-process."""
    run = run_recipe("cartpole", ["fit", "--data.env_id=ALE/Pongg-v5"], tmp_path)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    expected = "cartpole.py: error: data.env_id: unknown environment 'ALE/Pongg-v5'; did you mean ALE/Pong-v5"
    assert len(lines) == 1 and lines[0].startswith(expected), run.stderr
    assert not list(run.checkpoints.rglob("*.ckpt"))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--data.env_id=ALE/Pongg-v5"], "data.env_id: unknown environment 'ALE/Pongg-v5'; did you mean ALE/Pong-v5"),
        (["--data.batch_size=30"], "data.batch_size: 30 must be a multiple of data.envs_per_worker (16)"),
        (["--data.unroll_length=0"], "data.unroll_length: must be a positive integer, got 0"),
        (["--data.num_workers=-1"], "data.num_workers: must be a positive integer, got -1"),
        (["--model.network=huge"], "model.network: 'huge' is not one of shallow, deep, mlp"),
        (["--model.core=transformer"], "model.core: 'transformer' is not one of none, lstm, gru"),
        (["--model.discount=1.5"], "model.discount: must be a number in [0, 1], got 1.5"),
        (["--model.optimizer=sgd"], "model.optimizer: 'sgd' is not one of rmsprop, adam"),
        (["--model.loss_reduction=max"], "model.loss_reduction: 'max' is not one of sum, mean"),
        (["--model.lr_decay_frames=0"], "model.lr_decay_frames: must be a positive integer or null, got 0"),
        (["--ckpt_path=last"], "ckpt_path: 'last' needs"),
        (["--ckpt_path=nowhere.ckpt"], "ckpt_path: no checkpoint file at 'nowhere.ckpt'"),
        (["--data.envs_per_worker=0"], "data.envs_per_worker: must be a positive integer, got 0"),
        (["--data.batch_size=0"], "data.batch_size: must be a positive integer, got 0"),
        (["--trainer.precision=fp8"], "trainer.precision: 'fp8' is not one of"),
        (["--eval.episodes=0"], "eval.episodes: must be a positive integer, got 0"),
        (["--data.backend=envpool"], "data.backend: 'envpool' is not one of gymnasium, ale_vector"),
        (["--data.backend=ale_vector"], "data.backend: 'ale_vector' runs Atari games only, not 'CartPole-v1'"),
        (["--data.actors=slurm"], "data.actors: 'slurm' is not one of local, ray"),
        (["--data.actors=ray", "--data.ray_address=head"], "data.ray_address: 'head' is not local, auto, host:port"),
        (["--data.actor_device=tpu"], "data.actor_device: 'tpu' is not one of cpu, cuda, cuda:N"),
        (["--data.actor_precision=fp16"], "data.actor_precision: 'fp16' is not one of 32-true, bf16-mixed"),
        (["--data.learner_threads=0"], "data.learner_threads: must be a positive integer or null"),
        (["--model.rms_init=-1"], "model.rms_init: must be a number >= 0, got -1"),
        (["--model.entropy_cost=x"], "model.entropy_cost: must be a number >= 0, got 'x'"),
        (["--data.fire_reset=maybe"], "data.fire_reset: must be true or false, got maybe"),
        (["--data.sticky_actions=1"], "data.sticky_actions: must be a number in [0, 1), got 1"),
        (["--trainer.logger.init_args.retry_s=0"], "trainer.logger.retry_s: must be a number > 0, got 0"),
        # a subclass's own setting, typed in its own signature
        (
            ["--model=impala_lit.APPOModule", "--model.clip_range=1.5"],
            "model.clip_range: must be a number in (0, 1), got 1.5",
        ),
        pytest.param(
            ["--data.actor_device=cuda"],
            "data.actor_device: 'cuda' needs a CUDA GPU and none is visible (use cpu)",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible"),
        ),
    ],
)
def test_bad_settings_fail_in_one_line(
    tmp_path, args: list[str], expected: str, no_stray_workers, monkeypatch, capsys
) -> None:
    run = run_recipe_in_process("cartpole", ["fit", *args], tmp_path, monkeypatch, capsys)
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and expected in errors[0], run.stderr
    assert not (run.checkpoints / "last.ckpt").exists()


@pytest.mark.slow
def test_ckpt_path_last_resumes_from_a_relative_checkpoint_folder(tmp_path) -> None:
    first = run_recipe("cartpole", ["fit", "--trainer.max_steps=3", "--checkpoint.dirpath=rel"], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    # resuming with a data setting that differs from the checkpoint's (as a changed recipe default
    # would, e.g. Pong's unroll 20 -> 10) works and says so in one line
    again = run_recipe(
        "cartpole",
        ["fit", "--trainer.max_steps=5", "--checkpoint.dirpath=rel", "--ckpt_path=last", "--data.unroll_length=10"],
        tmp_path,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    # Lightning's INFO line goes to the run's log file, not to the console
    assert "Restored all states from the checkpoint at rel/last.ckpt" in (tmp_path / "rel" / "console.log").read_text()
    assert "exists and is not empty" not in again.stderr  # the folder is the run's own
    warnings = [line for line in again.stderr.splitlines() if line.startswith("warning: resuming with other data")]
    assert len(warnings) == 1 and warnings[0].endswith("data.unroll_length 10 (checkpoint: 20)"), again.stderr[-2000:]


@pytest.mark.slow
def test_a_run_of_the_earlier_pong_default_resumes_and_plays_without_flags(tmp_path, no_stray_workers) -> None:
    """Pong's default became the single-frame LSTM with APPO's clip. A run trained on the
    earlier default (4 frames, no core, IMPALA's loss: ``pong_feedforward.yaml``) resumes into its MLflow
    run and plays ``test`` games with no flags: the checkpoint's learner, core and frame stack are adopted."""
    small = ["--data.num_workers=2", "--data.envs_per_worker=4", "--data.batch_size=8", "--eval.every_n_steps=0",
             "--trainer.log_every_n_steps=1"]  # fmt: skip
    config = f"--config={ROOT / 'recipes' / 'configs' / 'pong_feedforward.yaml'}"
    first = run_recipe("pong", ["fit", config, "--trainer.max_steps=2", *small], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    params = first.only_run("pong").data.params
    assert (params["model.class"], params["model.core"], params["data.frame_stack"]) == (
        "impala_lit.ImpalaModule",
        "none",
        "4",
    )
    resumed = run_recipe("pong", ["fit", "--ckpt_path=last", "--trainer.max_steps=4", *small], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    same = first.only_run("pong")  # still one run
    frames = first.client().get_metric_history(same.info.run_id, "frames")
    # the earlier default's unrolls of 10 for 2 steps, then today's 40, and one line that says so
    assert max(m.value for m in frames) == 2 * 8 * 10 * 4 + 2 * 8 * 40 * 4
    warnings = [line for line in resumed.stderr.splitlines() if line.startswith("warning: resuming with other data")]
    assert len(warnings) == 1 and "data.unroll_length 40 (checkpoint: 10)" in warnings[0], resumed.stderr[-2000:]
    played = run_recipe("pong", ["test", "--ckpt_path=last", "--eval.episodes=1", "--eval.video=false"], tmp_path)
    assert played.returncode == 0, played.stderr[-3000:]
    assert "eval/return_mean" in played.stdout


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("truncated", "is not a readable checkpoint (truncated or not a torch file"),
        ("foreign", "was not written by impala_lit (no 'state_dict'/'impala' entries)"),
        ("deep network", "model.network: is 'shallow' but {path} was trained with 'deep' (set --model.network deep)"),
        ("pong", "data.env_id: is 'CartPole-v1' but {path} was trained with 'ALE/Pong-v5'"),
        ("pickled object", "{path} holds Python objects that a weights-only load refuses"),
    ],
)
def test_unusable_checkpoints_fail_in_one_line(
    tmp_path, content: str, expected: str, no_stray_workers, monkeypatch, capsys
) -> None:
    path = tmp_path / "given.ckpt"
    ours = {"state_dict": {"w": torch.zeros(3)}, "impala": {"frames": 0}}
    if content == "truncated":
        torch.save({**ours, "big": torch.zeros(10_000)}, path)
        path.write_bytes(path.read_bytes()[:20_000])
    elif content == "foreign":
        torch.save({"model": {"w": torch.zeros(3)}}, path)
    elif content == "deep network":
        torch.save({**ours, "hyper_parameters": {"network": "deep"}}, path)
    elif content == "pickled object":
        from .faulty import Payload

        torch.save({**ours, "callbacks": {"hook": Payload()}}, path)
    else:
        torch.save({**ours, "datamodule_hyper_parameters": {"env_id": "ALE/Pong-v5"}}, path)
    before = path.read_bytes()
    extra = ["--model.network=shallow"] if content == "deep network" else []  # asked for explicitly
    run = run_recipe_in_process("cartpole", ["fit", f"--ckpt_path={path}", *extra], tmp_path, monkeypatch, capsys)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and expected.format(path=path) in errors[0], run.stderr
    assert path.read_bytes() == before and not run.checkpoints.exists()  # nothing written, nothing overwritten


def test_ckpt_path_last_names_a_damaged_newest_checkpoint_and_the_newest_usable_one(
    tmp_path, no_stray_workers, monkeypatch, capsys
) -> None:
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    torch.save({"state_dict": {"w": torch.zeros(3)}, "impala": {"frames": 0}}, folder / "step5.ckpt")
    time.sleep(0.05)
    torch.save({"state_dict": {"w": torch.zeros(3)}, "impala": {"frames": 0}, "big": torch.zeros(10_000)},
               folder / "last.ckpt")  # fmt: skip
    (folder / "last.ckpt").write_bytes((folder / "last.ckpt").read_bytes()[:20_000])  # a disk that filled up
    run = run_recipe_in_process("cartpole", ["fit", "--ckpt_path=last"], tmp_path, monkeypatch, capsys)
    errors = [line for line in run.stderr.splitlines() if "error:" in line]
    assert run.returncode == 2 and len(errors) == 1, run.stderr
    assert f"{folder / 'last.ckpt'} is not a readable checkpoint" in errors[0]
    assert f"the newest usable one is {folder / 'step5.ckpt'} (pass it as --ckpt_path)" in errors[0]


@pytest.mark.parametrize("config", sorted((ROOT / "recipes" / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_config_file_resolves_with_its_recipe(config, tmp_path, monkeypatch, capsys) -> None:
    # the files the README and the docs point at: a renamed or removed setting must fail here, not in a user's hour
    recipes = sorted((p.stem for p in (ROOT / "recipes").glob("*.py")), key=len, reverse=True)
    recipe = next(name for name in recipes if config.name.startswith(f"{name}_"))  # procgen_games_coinrun.yaml
    run = run_recipe_in_process(recipe, ["fit", f"--config={config}", "--print_config"], tmp_path, monkeypatch, capsys)
    assert run.returncode == 0, run.stderr[-3000:]
    written = yaml.safe_load(config.read_text())
    resolved = yaml.safe_load(run.stdout)
    for section, values in written.items():
        if isinstance(values, dict) and "class_path" in values:
            assert resolved[section]["class_path"] == values["class_path"]
            values = values.get("init_args", {})
        for key, value in values.items():
            assert resolved[section].get("init_args", resolved[section]).get(key) == value, (section, key)


def test_the_atari_recipe_takes_any_game_under_the_published_protocol(tmp_path, monkeypatch, capsys) -> None:
    """``recipes/atari.py``: the baselines' protocol for any game; ``recipes/pong.py``: the same settings on
    Pong without end-of-life or FIRE, as they were measured."""
    atari = run_recipe_in_process("atari", ["fit", "--data.env_id=ALE/Qbert-v5", "--print_config"], tmp_path,
                                  monkeypatch, capsys)  # fmt: skip
    pong = run_recipe_in_process("pong", ["fit", "--print_config"], tmp_path, monkeypatch, capsys)
    assert atari.returncode == 0 and pong.returncode == 0, atari.stderr[-2000:] + pong.stderr[-2000:]
    atari_config, pong_config = yaml.safe_load(atari.stdout), yaml.safe_load(pong.stdout)
    data = atari_config["data"]
    assert data["env_id"] == "ALE/Qbert-v5" and data["episodic_life"] and data["fire_reset"]
    assert data["sticky_actions"] == 0.0 and data["clip_rewards"] and data["frame_skip"] == 4
    assert pong_config["data"]["env_id"] == "ALE/Pong-v5"
    assert not pong_config["data"]["episodic_life"] and not pong_config["data"]["fire_reset"]
    different = {k for k in data if data[k] != pong_config["data"][k]}
    assert different == {"env_id", "episodic_life", "fire_reset"}
    assert atari_config["model"] == {**pong_config["model"], "init_args": atari_config["model"]["init_args"]}
    same_model = {k: v for k, v in atari_config["model"]["init_args"].items() if k != "max_frames"}
    assert same_model == {k: v for k, v in pong_config["model"]["init_args"].items() if k != "max_frames"}


@pytest.mark.slow
def test_an_atari_game_with_end_of_life_and_fire_trains_in_its_own_experiment(tmp_path, no_stray_workers) -> None:
    """Real actors on ``ale_vector`` with end-of-life episodes (each actor resets its envs more than once)."""
    run = run_recipe("atari", ["fit", "--data.env_id=ALE/Breakout-v5", "--trainer.max_steps=4",
                               "--data.envs_per_worker=8", "--data.batch_size=8"], tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    logged = run.client().get_run(run.only_run("atari-breakout").info.run_id)
    assert logged.data.params["data.episodic_life"] == "True" and logged.data.params["data.fire_reset"] == "True"
    assert (run.checkpoints / "last.ckpt").is_file()
