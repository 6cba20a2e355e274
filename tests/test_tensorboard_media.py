"""TensorBoard extras read back from the event files: hparams (once per run), best-policy GIFs, histograms.
The files are read with TensorFlow's public API, as TensorBoard reads a folder (``event_files``)."""

import csv
import io

from PIL import Image

from event_files import hparams_plugin_data, summaries
from champion.agents.networks import ActorCritic, numpy_policy
from champion.runners.store.best_store import load_best
from champion.runners.configure import resolve_config
from champion.runners.logs import media as media_module
from champion.runners.logs.media import FIRST_ESTIMATE, FRAME_STRIDE, MAX_FRAMES, BestPolicyMedia
from champion.runners.logs.run_logger import BEST_POLICY_GIF, RunLogger
from champion.runners.store.run_metadata import hparams, network_spec
from champion.runners.training import resume, train
from champion.envs.factory import describe_env


QUICK_ENGINE = {"engine": "gymnasium", "ppo.jit_compile": False}
"""For tests of what is logged, not of the engine: no XLA compile (the GIF test keeps the default graph engine)."""


def events(run_dir):
    """tag -> the values logged under it (``event_files.Point``)."""
    return summaries(run_dir / "tb")


def hparams_records(logged, kind):
    """The hparams dashboard's records of one kind in the run's events: "session_start_info" (a session's
    hyperparameters) or "experiment" (the columns and metrics the dashboard shows)."""
    records = []
    for points in logged.values():
        for point in points:
            if point.plugin == "hparams":
                data = hparams_plugin_data(point.content)
                if data.HasField(kind):
                    records.append(getattr(data, kind))
    return records


def hparams_sessions(logged):
    """The hparams session-start records in the run's events."""
    return hparams_records(logged, "session_start_info")


def cartpole_run(results, **values):
    config, _ = resolve_config("CartPole-v1", "ppo", {
        "results_dir": str(results), "total_steps": 3072, "eval_every": 1024, "ppo.epochs": 2, "run_name": "media",
        **values})
    return train(config, progress=False)


def test_hparams_once_across_resumes_and_weight_histograms_every_histogram_every_steps(tmp_path):
    run_dir = cartpole_run(tmp_path, media=False, histogram_every=2048, schedule_steps=4096, **QUICK_ENGINE).run_dir
    check_histograms(events(run_dir))  # before the resume: 3,072 steps hold one multiple of 2,048
    resume(run_dir, {"total_steps": 4096}, progress=False)
    logged = events(run_dir)
    [session] = hparams_sessions(logged)
    values = {name: value for name, value in session.hparams.items()}
    assert values["env_id"].string_value == "CartPole-v1" and values["algo"].string_value == "ppo"
    assert values["engine"].string_value == "gymnasium"  # the engine used (graph under "auto" by default)
    assert values["ppo.epochs"].number_value == 2 and values["total_steps"].number_value == 3072
    assert not any(name.startswith("a2c.") for name in values)
    assert session.group_name == "media"
    # the dashboard's metrics (each tag's last value) are the best and the latest evaluation return and the
    # champion's held-out mean, all logged by the run, and nothing else of its scalars
    [experiment] = hparams_records(logged, "experiment")
    metrics = {metric.name.tag: metric.display_name for metric in experiment.metric_infos}
    assert metrics == {"eval/best_mean_return": "best evaluation return",
                       "eval/mean_return": "latest evaluation return",
                       "crown/champion_held_out_mean": "champion's held-out mean"}
    assert {metric.name.group for metric in experiment.metric_infos} == {""}  # in the session's own folder
    assert set(metrics) <= {tag for tag, points in logged.items() if points[0].plugin == "scalars"}
    # its columns: every key either algorithm records, this run's among them
    columns = {info.name: info for info in experiment.hparam_infos}
    assert set(values) < set(columns) and {"ppo.epochs", "a2c.optimizer", "engine"} <= set(columns)
    assert {value.string_value for value in columns["algo"].domain_discrete.values} == {"ppo", "a2c"}
    assert [value.bool_value for value in columns["media"].domain_discrete.values] == [False, True]
    assert not columns["ppo.epochs"].HasField("domain_discrete")  # numbers: any value


def test_a_ppo_run_and_an_a2c_run_declare_the_same_hparams_experiment(tmp_path):
    """TensorBoard takes the experiment of whichever run it reads first as the whole folder's: PPO and A2C runs
    declare the same one (their time of writing apart), so either way both algorithms' keys are columns."""
    experiments = []
    for algo in ("ppo", "a2c"):
        config, _ = resolve_config("CartPole-v1", algo, {})
        logger = RunLogger(tmp_path / algo, log_every=100)
        logger.log_hparams(hparams(config, "gymnasium"), algo)
        logger.close()
        logged = summaries(tmp_path / algo / "tb")
        [experiment] = hparams_records(logged, "experiment")
        [session] = hparams_sessions(logged)
        assert set(session.hparams) < {info.name for info in experiment.hparam_infos}
        experiment.time_created_secs = 0
        experiments.append(experiment)
    assert experiments[0] == experiments[1]


def test_each_new_best_is_an_animated_gif_of_the_first_evaluation_episode(tmp_path, monkeypatch):
    monkeypatch.setattr(media_module, "MEDIA_BUDGET", 1.0)  # no throttling here: every best is recorded
    run = cartpole_run(tmp_path)
    images = events(run.run_dir)[BEST_POLICY_GIF]
    assert {image.plugin for image in images} == {"images"}
    rows = list(csv.DictReader(open(run.run_dir / "evaluations.csv")))
    assert [event.step for event in images] == [int(row["step"]) for row in rows if row["saved"] == "1"]
    best = load_best(run.run_dir / "best").manifest
    assert images[-1].step == best["step"]
    width, height, encoded = images[-1].value
    gif = Image.open(io.BytesIO(encoded))
    assert gif.format == "GIF" and gif.size == (int(width), int(height)) == (300, 200)
    # the start frame, then every 2nd step of the first evaluation episode (CartPole: length = return),
    # at 25 frames/s (CartPole renders at 50); pillow merges identical neighbours, adding up their durations
    durations = []
    for index in range(gif.n_frames):
        gif.seek(index)
        durations.append(gif.info["duration"])
    frames = 1 + min(int(best["returns"][0]), MAX_FRAMES * FRAME_STRIDE) // FRAME_STRIDE
    assert sum(durations) == frames * 40 and gif.n_frames > 5


def check_histograms(logged):
    """Weights and last applied gradients: kernel and bias of 2 hidden layers x 2 torsos + 2 heads, each."""
    names = list(logged)
    weights = sorted(tag for tag in names if tag.startswith("weights/"))
    gradients = sorted(tag for tag in names if tag.startswith("gradients/"))
    assert len(weights) == 12 and [tag.replace("gradients/", "weights/") for tag in gradients] == weights
    steps = {tag: [event.step for event in logged[tag]] for tag in weights + gradients}
    assert all(found == [2048] for found in steps.values())
    assert {logged[tag][0].plugin for tag in weights + gradients} == {"histograms"}
    for tag in (weights[0], gradients[0]):
        buckets = logged[tag][0].value  # (left, right, count) per bucket
        assert buckets.shape[1] == 3 and buckets[:, 2].sum() > 0
    gradient_buckets = logged[gradients[0]][0].value
    assert gradient_buckets[:, :2].min() < 0 < gradient_buckets[:, :2].max()  # a real gradient, not zeros


def cartpole_media(budget):
    """A BestPolicyMedia on CartPole that notes the steps it writes a GIF for, and a policy to offer it."""
    config, _ = resolve_config("CartPole-v1", "ppo", {})
    written = []
    media = BestPolicyMedia("CartPole-v1", 0, lambda step, gif, width, height: written.append(step),
                            budget=budget)
    return media, numpy_policy(ActorCritic(network_spec(describe_env("CartPole-v1"), config))), written


def test_media_stay_within_their_budget_and_the_skipped_best_is_recorded_at_the_end():
    """Within budget as it goes; at the end, the last skipped best if affordable then."""
    media, policy, written = cartpole_media(budget=0.05)
    assert not media.offer(500, wall_seconds=1.0, policy=policy)  # 5% of 1 s < the first estimate
    assert media.offer(1000, wall_seconds=FIRST_ESTIMATE / 0.05, policy=policy)
    cost = media.seconds
    skipped = policy.snapshot()
    assert not media.offer(2000, wall_seconds=cost, policy=skipped)  # 2 x cost > 5% of cost
    assert media.pending.step == 2000 and media.pending.policy is skipped
    assert not media.finish(wall_seconds=cost)
    assert media.finish(wall_seconds=100 * cost)
    assert written == [1000, 2000] and media.pending is None


def test_no_media_writes_no_gif(tmp_path):
    config, _ = resolve_config("CartPole-v1", "ppo", {"results_dir": str(tmp_path), "total_steps": 1024,
                                                      "eval_every": 1024, "media": False, "ppo.epochs": 1,
                                                      **QUICK_ENGINE})
    result = train(config, progress=False)
    assert BEST_POLICY_GIF not in events(result.run_dir)
    assert "media (best-policy GIF)" not in result.timings


def test_a_short_run_whose_bests_were_all_skipped_gets_a_gif_at_the_end_only_if_the_budget_allows_it():
    """The budget holds after training too (issue 31: a MuJoCo GIF there took half of a short run)."""
    media, policy, written = cartpole_media(budget=0.05)
    assert not media.offer(1000, wall_seconds=1.0, policy=policy) and not media.offer(2000, wall_seconds=2.0, policy=policy)
    assert not media.finish(wall_seconds=2.0) and media.pending.step == 2000 and written == []
    assert media.finish(wall_seconds=FIRST_ESTIMATE / 0.05)
    assert written == [2000] and media.pending is None


def test_a_best_whose_gif_the_stopped_session_still_owed_is_recorded_by_the_resumed_one(tmp_path, monkeypatch):
    """Killed right after the checkpoint at 1,024 steps, whose first best's GIF the budget had put off: the
    resumed session records it when its budget allows (a learning rate of 1e-12, so no later evaluation
    replaces that best)."""
    from crash_helpers import champion

    run_dir = tmp_path / "CartPole-v1" / "ppo" / "owed"
    settings = ["--set", "checkpoint_every=1024", "--set", "ppo.learning_rate=1e-12", "--set", "engine=gymnasium",
                "--set", "ppo.jit_compile=false", "--set", "ppo.epochs=1", "--set", "eval_in_background=false"]
    killed = champion(["train", "CartPole-v1", "--total-steps", "2048", "--eval-every", "1024", "--results-dir",
                       str(tmp_path), "--run-name", "owed", "--quiet", *settings],
                      env={"CHAMPION_FAULT_KILL_AT_STEP": "1024"})
    assert killed.returncode == -9, killed.stderr
    assert load_best(run_dir / "best").manifest["step"] == 1024
    assert BEST_POLICY_GIF not in events(run_dir)  # put off by the budget, then the kill
    monkeypatch.setattr(media_module, "MEDIA_BUDGET", 1.0)  # a short session's 4% would not pay for it
    monkeypatch.setattr(media_module, "FIRST_ESTIMATE", 0.0)
    resume(run_dir, progress=False)
    assert load_best(run_dir / "best").manifest["step"] == 1024
    assert [event.step for event in events(run_dir)[BEST_POLICY_GIF]] == [1024]
