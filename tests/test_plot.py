"""`champion plot` draws each run's evaluations as they were recorded, one panel per env; `champion runs --leaderboard`
picks the best run."""

import json
import math
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from matplotlib.image import imread

from champion.runners.cli.main import main
from champion.runners.cli.plotting import compact_count, evaluation_figure, save_figure
from champion.runners.store.runs import leaderboard, summarize

COLUMNS = ["step", "wall_seconds", "mean_return", "std_return", "min_return", "max_return", "mean_length",
           "best_mean_return", "saved"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# (step, mean, min, max, saved): a new best at 1000, 3000 and 4000, a drop at 2000.
SEED0 = [(1000, 20.0, 10.0, 31.0, 1), (2000, 15.5, 9.0, 22.0, 0), (3000, 60.0, 41.0, 80.0, 1), (4000, 90.0, 90.0, 90.0, 1)]
SEED1 = [(1000, 30.0, 25.0, 35.0, 1), (2000, 28.0, 20.0, 33.0, 0), (3000, 25.0, 5.0, 45.0, 0)]


def make_run(root, env_id, algo, name, evaluations, best=None, age=0):
    """A run folder as champion train leaves it, without training: config, evaluations.csv, best manifest.

    ``age`` orders runs (find_run_dirs lists the oldest config.yaml first); ``best`` is (step, mean_return).
    """
    run_dir = root / env_id / algo / name
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(f"env_id: {env_id}\nalgo: {algo}\ntotal_steps: 5000\n")
    best_so_far = -np.inf
    lines = [",".join(COLUMNS)]
    for step, mean, low, high, saved in evaluations:
        best_so_far = max(best_so_far, mean) if saved else best_so_far
        lines.append(f"{step},{step / 100},{mean},1.0,{low},{high},{mean},{best_so_far},{saved}")
    (run_dir / "evaluations.csv").write_text("\n".join(lines) + "\n")
    if best is not None:
        entry = run_dir / "best" / f"0001-step-{best[0]}"
        entry.mkdir(parents=True)
        (entry / "manifest.json").write_text(json.dumps({"step": best[0], "mean_return": best[1]}))
        (run_dir / "best" / "current.json").write_text(json.dumps({"entry": entry.name}))
    os.utime(run_dir / "config.yaml", (1_700_000_000 - age, 1_700_000_000 - age))
    return run_dir


def run_cli(args, capsys):
    """(exit code, stdout lines, stderr lines) of `champion ARGS`."""
    try:
        main(args)
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code
    captured = capsys.readouterr()
    return code, captured.out.strip().splitlines(), captured.err.strip().splitlines()


@pytest.fixture
def two_seeds(tmp_path):
    results = tmp_path / "results"
    return (make_run(results, "CartPole-v1", "ppo", "seed0", SEED0, age=20),
            make_run(results, "CartPole-v1", "ppo", "seed1", SEED1, age=10))


def test_each_run_is_one_curve_of_its_means_with_its_min_max_band_and_best_markers(two_seeds):
    figure = evaluation_figure(list(two_seeds))
    (axes,) = figure.axes
    assert len(axes.lines) == 2 and len(axes.collections) == 2  # one curve and one band per run, nothing else
    for line, band, rows in zip(axes.lines, axes.collections, [SEED0, SEED1]):
        steps, means, lows, highs, saved = map(list, zip(*rows))
        assert list(line.get_xdata()) == steps and list(line.get_ydata()) == means
        assert [steps[index] for index in line.get_markevery()] == [s for s, flag in zip(steps, saved) if flag]
        assert line.get_marker() == "*"
        vertices = {tuple(vertex) for path in band.get_paths() for vertex in path.vertices}
        assert {(step, low) for step, low in zip(steps, lows)} <= vertices
        assert {(step, high) for step, high in zip(steps, highs)} <= vertices
        assert min(y for _, y in vertices) == min(lows) and max(y for _, y in vertices) == max(highs)
        assert tuple(band.get_facecolor()[0][:3]) == pytest.approx(to_rgb(line.get_color()))
    assert [text.get_text() for text in axes.get_legend().get_texts()] == ["seed0", "seed1", "new best", "min-max band"]
    assert (axes.get_title(), axes.get_ylabel(), axes.get_xlabel()) == ("CartPole-v1 · ppo", "mean evaluation return",
                                                                        "env steps")


def test_a_run_without_a_new_best_gets_no_markers_and_labels_name_what_differs(tmp_path):
    results = tmp_path / "results"
    flat = [(1000, 5.0, 1.0, 9.0, 0), (2000, 6.0, 2.0, 9.0, 0)]
    runs = [make_run(results, "CartPole-v1", "ppo", "a", flat), make_run(results, "CartPole-v1", "a2c", "a", SEED1)]
    axes = evaluation_figure(runs).axes[0]
    assert [line.get_label() for line in axes.lines] == ["ppo/a", "a2c/a"]
    assert axes.lines[0].get_markevery() is None and axes.lines[0].get_marker() in (None, "None", "")
    assert axes.get_title() == "CartPole-v1"
    other_env = make_run(results, "Acrobot-v1", "ppo", "b", SEED0)
    acrobot, cartpole = evaluation_figure(runs + [other_env]).axes  # the panel's title names the env: labels need not
    assert [line.get_label() for line in cartpole.lines] == ["ppo/a", "a2c/a"]
    assert [line.get_label() for line in acrobot.lines] == ["b"]


def visible_tick_labels(axes):
    """The x tick label texts drawn inside the axes' view, left to right, and their extents on the canvas."""
    axes.figure.canvas.draw()
    low, high = sorted(axes.get_xlim())
    ticks = [(label.get_text(), label.get_window_extent()) for label, tick in
             zip(axes.get_xticklabels(), axes.get_xticks()) if low <= tick <= high and label.get_text()]
    return [text for text, _ in ticks], [extent for _, extent in ticks]


def spread(total_steps, count, start_return=0.0, end_return=100.0):
    """``count`` evaluations evenly up to ``total_steps``, the return rising linearly; every third a new best."""
    steps = np.linspace(total_steps / count, total_steps, count).astype(int)
    means = np.linspace(start_return, end_return, count)
    return [(int(step), float(mean), float(mean) - 5, float(mean) + 5, int(index % 3 == 0))
            for index, (step, mean) in enumerate(zip(steps, means))]


# name: (env, algo, run name, evaluations), oldest first: two CartPole runs, a 10M-step Pendulum run, a 2,000-step Acrobot run
THREE_ENVS = {"ppo": ("CartPole-v1", "ppo", "seed0", spread(150_000, 15, 20, 500)),
              "pendulum": ("Pendulum-v1", "ppo", "seed0", spread(10_000_000, 40, -1500, -200)),
              "a2c": ("CartPole-v1", "a2c", "seed0", spread(150_000, 15, 10, 480)),
              "acrobot": ("Acrobot-v1", "a2c", "seed1", spread(2_000, 4, -500, -90))}


@pytest.fixture
def three_envs(tmp_path):
    """THREE_ENVS' run folders by name."""
    return {name: make_run(tmp_path / "results", *spec, age=40 - 10 * index)
            for index, (name, spec) in enumerate(THREE_ENVS.items())}


def test_each_env_gets_a_panel_of_its_own_sharing_nothing_with_its_runs_alone(three_envs):
    runs = three_envs
    figure = evaluation_figure([runs["ppo"], runs["pendulum"], runs["a2c"], runs["acrobot"]])
    assert [axes.get_title() for axes in figure.axes] == ["Acrobot-v1 · a2c", "CartPole-v1", "Pendulum-v1 · ppo"]
    acrobot, cartpole, pendulum = figure.axes
    for axes, names in [(acrobot, ["acrobot"]), (cartpole, ["ppo", "a2c"]), (pendulum, ["pendulum"])]:
        assert [list(line.get_ydata()) for line in axes.lines] == [[mean for _, mean, *_ in THREE_ENVS[name][3]]
                                                                   for name in names]
        assert len(axes.collections) == len(names)  # one band per run of this env, none of another env's
        assert axes.get_ylabel() == "mean evaluation return"
        assert axes.get_shared_x_axes().get_siblings(axes) == [axes]
        assert axes.get_shared_y_axes().get_siblings(axes) == [axes]
        labels = [text.get_text() for text in axes.get_legend().get_texts()]
        assert labels == [line.get_label() for line in axes.lines] + ["new best", "min-max band"]
    assert [line.get_label() for line in cartpole.lines] == ["ppo/seed0", "a2c/seed0"]
    assert figure.legends == []  # each panel's legend names its own runs
    assert pendulum.get_ylim()[1] < 0 and cartpole.get_ylim()[0] > -100  # neither stretched to the other's scale


@pytest.mark.parametrize("env_count, grid, size", [
    (1, (1, 1), (9.0, 4.5)), (2, (1, 2), (13.0, 4.5)), (3, (1, 3), (19.5, 4.5)), (4, (2, 2), (13.0, 9.0)),
    (5, (2, 3), (19.5, 9.0)), (7, (3, 3), (19.5, 13.5)),
])
def test_panels_are_at_most_three_a_row_and_the_figure_grows_with_them(tmp_path, env_count, grid, size):
    runs = [make_run(tmp_path, f"Env{index}-v0", "ppo", "seed0", SEED0, age=index) for index in range(env_count)]
    figure = evaluation_figure(runs)
    assert len(figure.axes) == env_count
    assert [axes.get_title() for axes in figure.axes] == [f"Env{index}-v0 · ppo" for index in range(env_count)]
    assert {axes.get_subplotspec().get_gridspec().get_geometry() for axes in figure.axes} == {grid}
    assert tuple(figure.get_size_inches()) == size


@pytest.mark.parametrize("value, text", [
    (0, "0"), (500, "500"), (1_000, "1k"), (1_500, "1.5k"), (2_000, "2k"), (12_345, "12.3k"), (100_000, "100k"),
    (125_000, "125k"), (999_999, "1M"), (1_500_000, "1.5M"), (10_000_000, "10M"), (2_500_000_000, "2.5B"),
    (-2_500_000, "-2.5M"),
])
def test_step_counts_are_compact(value, text):
    assert compact_count(value) == text


@pytest.mark.parametrize("run, alone, among_three", [
    ("acrobot", ["500", "750", "1k", "1.25k", "1.5k", "1.75k", "2k"], ["500", "1k", "1.5k", "2k"]),
    ("ppo", ["20k", "40k", "60k", "80k", "100k", "120k", "140k"], ["50k", "100k", "150k"]),
    ("pendulum", ["0", "2M", "4M", "6M", "8M", "10M"], ["0", "2.5M", "5M", "7.5M", "10M"]),
])
def test_x_tick_labels_are_compact_few_and_never_overlap(three_envs, run, alone, among_three):
    for runs, labels in [([three_envs[run]], alone), (list(three_envs.values()), among_three)]:
        (axes,) = [axes for axes in evaluation_figure(runs).axes if axes.get_title().startswith(THREE_ENVS[run][0])]
        texts, extents = visible_tick_labels(axes)
        assert texts == labels
        assert all(left.x1 < right.x0 for left, right in zip(extents, extents[1:])), texts


def test_a_folder_stands_for_its_runs_with_evaluations_oldest_first_without_duplicates(two_seeds, tmp_path):
    seed0, seed1 = two_seeds
    algo_dir = seed0.parent
    make_run(tmp_path / "results", "CartPole-v1", "ppo", "just-started", [], age=0)  # header only: left out
    axes = evaluation_figure([algo_dir, seed1, algo_dir / ".." / "ppo" / "seed0"]).axes[0]
    assert [line.get_label() for line in axes.lines] == ["seed0", "seed1"]
    assert list(axes.lines[1].get_ydata()) == [mean for _, mean, _, _, _ in SEED1]


def test_cli_writes_a_valid_png_next_to_one_run_and_in_the_current_folder_for_several(two_seeds, tmp_path,
                                                                                     capsys, monkeypatch):
    seed0, _ = two_seeds
    code, out, err = run_cli(["plot", str(seed0)], capsys)
    written = seed0 / "evaluations.png"
    assert (code, out, err) == (0, [f"wrote {written}"], [])
    assert written.read_bytes()[:8] == PNG_MAGIC
    assert imread(written).shape == (450, 900, 4)  # figsize 9 x 4.5 inches at 100 dpi
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli(["plot", str(seed0.parent)], capsys)
    assert (code, out) == (0, ["wrote champion-plot.png"])
    assert (tmp_path / "champion-plot.png").read_bytes()[:8] == PNG_MAGIC


def test_cli_says_how_many_envs_it_drew_and_gives_each_a_panel(three_envs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(["plot", str(tmp_path / "results")], capsys)
    assert (code, err) == (0, [])
    assert out == ["wrote champion-plot.png (3 envs, one panel each: Acrobot-v1, CartPole-v1, Pendulum-v1)"]
    assert imread(tmp_path / "champion-plot.png").shape == (450, 1950, 4)  # three panels of 6.5 x 4.5 inches
    code, out, _ = run_cli(["plot", str(three_envs["ppo"]), str(three_envs["a2c"]), "--out", "cartpole.svg"], capsys)
    assert (code, out) == (0, ["wrote cartpole.svg"])  # one env: nothing to add


def test_cli_out_chooses_the_format_and_leaves_no_temporary_file(two_seeds, tmp_path, capsys):
    plots = tmp_path / "plots"
    plots.mkdir()
    code, out, _ = run_cli(["plot", *map(str, two_seeds), "--out", str(plots / "seeds.svg")], capsys)
    assert (code, out) == (0, [f"wrote {plots / 'seeds.svg'}"])
    assert sorted(path.name for path in plots.iterdir()) == ["seeds.svg"]
    assert (plots / "seeds.svg").read_text().lstrip().startswith("<?xml")


def test_save_figure_replaces_an_existing_file_whole(two_seeds, tmp_path):
    out = tmp_path / "curves.pdf"
    out.write_bytes(b"old")
    save_figure(evaluation_figure(list(two_seeds)), out)
    assert out.read_bytes()[:5] == b"%PDF-" and [path.name for path in tmp_path.iterdir() if path.is_file()] == [out.name]


@pytest.mark.parametrize("case, message", [
    ("missing", "{tmp}/missing does not exist; give run folders such as results/CartPole-v1/ppo/<run>"),
    ("no-runs", "{tmp}/empty is not a run folder (no config.yaml) and holds no runs"),
    ("no-evaluations", "{tmp}/results/CartPole-v1/ppo/fresh has no evaluations yet; plot it after its first evaluation"),
    ("no-csv", "{tmp}/results/CartPole-v1/ppo/fresh has no evaluations yet; plot it after its first evaluation"),
    ("folder-without-evaluations", "{tmp}/results holds no run with evaluations yet; plot it after a first evaluation"),
    ("bad-suffix", "--out must end in .png, .svg or .pdf, got '{tmp}/plot.jpg'"),
    ("missing-out-folder", "--out folder {tmp}/nowhere does not exist; create it or choose another path"),
])
def test_bad_plot_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, case, message):
    (tmp_path / "empty").mkdir()
    fresh = make_run(tmp_path / "results", "CartPole-v1", "ppo", "fresh", [])
    if case == "no-csv":
        (fresh / "evaluations.csv").unlink()
    target = {"missing": tmp_path / "missing", "no-runs": tmp_path / "empty",
              "folder-without-evaluations": tmp_path / "results"}.get(case, fresh)
    out = {"bad-suffix": ["--out", str(tmp_path / "plot.jpg")],
           "missing-out-folder": ["--out", str(tmp_path / "nowhere" / "plot.png")]}.get(case, [])
    if out:
        target = make_run(tmp_path / "results", "CartPole-v1", "ppo", "done", SEED0)
    before = sorted(tmp_path.rglob("*"))
    code, stdout, err = run_cli(["plot", str(target), *out], capsys)
    assert (code, stdout, err) == (2, [], [f"champion plot: error: {message.format(tmp=tmp_path)}"])
    assert sorted(tmp_path.rglob("*")) == before


@pytest.fixture
def leaderboard_results(tmp_path):
    results = tmp_path / "results"
    make_run(results, "CartPole-v1", "ppo", "good", SEED0, best=(4000, 400.0), age=40)
    make_run(results, "CartPole-v1", "a2c", "best-but-late", SEED0, best=(9000, 500.0), age=30)
    make_run(results, "CartPole-v1", "ppo", "best-and-early", SEED0, best=(7000, 500.0), age=20)
    make_run(results, "Acrobot-v1", "a2c", "only-one", SEED1, best=(3000, -80.0), age=10)
    make_run(results, "Acrobot-v1", "ppo", "no-best-yet", [], age=5)
    make_run(results, "Pendulum-v1", "ppo", "no-best-either", [], age=0)
    return results


def test_leaderboard_json_is_the_best_run_per_env_ties_to_the_earlier_step(leaderboard_results, capsys):
    code, out, _ = run_cli(["runs", "--results-dir", str(leaderboard_results), "--leaderboard", "--json"], capsys)
    rows = json.loads("\n".join(out))
    assert code == 0
    assert [(row["env_id"], row["algo"], row["run_name"], row["best_mean_return"], row["best_step"]) for row in rows] == [
        ("Acrobot-v1", "a2c", "only-one", -80.0, 3000), ("CartPole-v1", "ppo", "best-and-early", 500.0, 7000)]
    assert rows[1]["path"] == str(leaderboard_results / "CartPole-v1" / "ppo" / "best-and-early")


def test_leaderboard_table_shows_only_the_leaders(leaderboard_results, capsys):
    code, out, _ = run_cli(["runs", "--results-dir", str(leaderboard_results), "--leaderboard"], capsys)
    table = "\n".join(out)
    assert code == 0 and "best run per env" in table
    assert "best-and-early" in table and "only-one" in table and "7,000" in table
    assert not any(name in table for name in ["good", "best-but-late", "no-best-yet", "no-best-either"])
    header = next(line for line in out if "env" in line and "algo" in line)
    assert [cell.strip() for cell in header.strip("┃ ").split("┃")] == ["env", "algo", "run", "best return",
                                                                         "at step", "crowned (held-out)", "path"]


def test_leaderboard_skips_unranked_returns_and_keeps_the_first_of_full_ties(two_seeds):
    base = summarize(two_seeds[0])
    candidates = [("nan", math.nan), ("inf", math.inf), ("none", None), ("first", 1.0), ("second", 1.0)]
    summaries = [replace(base, run_name=name, best_mean_return=value, best_step=1) for name, value in candidates]
    assert [summary.run_name for summary in leaderboard(summaries)] == ["first"]
    assert leaderboard(summaries[:3]) == [] and leaderboard([]) == []


def test_runs_does_not_import_matplotlib(leaderboard_results):
    code = ("import sys; from champion.runners.cli.main import main; main(['runs', '--results-dir', sys.argv[1], '--json']); "
            "print('matplotlib' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code, str(leaderboard_results)], capture_output=True, text=True,
                            timeout=120, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False"
