"""Evaluation curves of one or more runs on one figure, one panel per env (``champion plot``).

Reading the runs needs no matplotlib; it is imported only when a figure is drawn, so that the
other commands start without it. Figures are drawn with the Agg canvas, never through pyplot's
global state, and written atomically.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from champion.errors import ChampionError
from champion.runners.store.atomic_files import atomic_write_bytes
from champion.runners.store.folder_trust import MAX_EVALUATIONS_BYTES, read_bytes
from champion.runners.store.runs import RunSummary, find_run_dirs, is_run_dir, summarize

if TYPE_CHECKING:
    from matplotlib.figure import Figure

IMAGE_SUFFIXES = (".png", ".svg", ".pdf")
ONE_RUN_IMAGE = "evaluations.png"
SEVERAL_RUNS_IMAGE = "champion-plot.png"
BEST_MARKER = "*"
MAX_PANELS_PER_ROW = 3
SINGLE_PANEL_SIZE = (9.0, 4.5)  # inches: one env's panel and its legend
PANEL_SIZE = (6.5, 4.5)  # inches per panel when there are several
SINGLE_PANEL_X_BINS = 8  # at most this many x tick intervals: compact labels fit in a panel's width
PANEL_X_BINS = 5
_COLUMNS = ("step", "mean_return", "min_return", "max_return", "saved")


class PlotError(ChampionError, ValueError):
    """The runs or the output path cannot be plotted as asked; the message says why."""


@dataclass(frozen=True)
class EvaluationCurve:
    """One run's evaluations, as read from its evaluations.csv."""

    label: str
    steps: tuple[int, ...]
    means: tuple[float, ...]
    mins: tuple[float, ...]
    maxs: tuple[float, ...]
    saved: tuple[bool, ...]

    @property
    def best_steps(self) -> tuple[int, ...]:
        """The steps whose evaluation became the new best policy."""
        return tuple(step for step, saved in zip(self.steps, self.saved) if saved)


def expand_run_dirs(paths: Sequence[Path]) -> list[Path]:
    """Each path as a run folder, or the runs inside it that have evaluations (oldest first); no duplicates.

    A run given by name must have evaluations (read_evaluations says so if not); a run found inside a
    folder that has none yet (just started) is left out rather than failing the whole plot.
    """
    run_dirs: dict[Path, Path] = {}
    for path in map(Path, paths):
        for run_dir in _runs_at(path):
            run_dirs.setdefault(run_dir.resolve(), run_dir)
    return list(run_dirs.values())


def _runs_at(path: Path) -> list[Path]:
    if not path.exists():
        raise PlotError(f"{path} does not exist; give run folders such as results/CartPole-v1/ppo/<run>")
    if is_run_dir(path):
        return [path]
    found = find_run_dirs(path) if path.is_dir() else []
    if not found:
        raise PlotError(f"{path} is not a run folder (no config.yaml) and holds no runs")
    with_evaluations = [run_dir for run_dir in found if _has_evaluations(run_dir)]
    if not with_evaluations:
        raise PlotError(f"{path} holds no run with evaluations yet; plot it after a first evaluation")
    return with_evaluations


def _has_evaluations(run_dir: Path) -> bool:
    try:
        read_evaluations(run_dir, label="")
    except PlotError:
        return False
    return True


def read_evaluations(run_dir: Path, label: str) -> EvaluationCurve:
    """The run's evaluation rows; a row cut short by a crash is skipped."""
    csv_path = Path(run_dir) / "evaluations.csv"
    try:
        text = read_bytes(csv_path, MAX_EVALUATIONS_BYTES).decode("utf-8", errors="replace")
        reader = csv.DictReader(io.StringIO(text, newline=""))
        rows, header = list(reader), reader.fieldnames or []
    except (OSError, ValueError):
        rows, header = [], []
    missing = [column for column in _COLUMNS if header and column not in header]
    if missing:
        raise PlotError(f"{csv_path} has no column {missing[0]!r}; expected the columns champion train writes")
    parsed = [values for values in map(_parse_row, rows) if values is not None]
    if not parsed:
        raise PlotError(f"{run_dir} has no evaluations yet; plot it after its first evaluation")
    steps, means, mins, maxs, saved = zip(*parsed)
    return EvaluationCurve(label, steps, means, mins, maxs, saved)


def _parse_row(row: dict[str, str]) -> tuple[int, float, float, float, bool] | None:
    try:
        return (int(row["step"]), float(row["mean_return"]), float(row["min_return"]),
                float(row["max_return"]), row["saved"].strip() == "1")
    except (TypeError, ValueError, AttributeError):
        return None


def run_labels(summaries: Sequence[RunSummary]) -> list[str]:
    """The run names, prefixed by env and algo where the runs differ in them (the path if still ambiguous)."""
    show_env = len({summary.env_id for summary in summaries}) > 1
    show_algo = show_env or len({summary.algo for summary in summaries}) > 1
    labels = ["/".join(([summary.env_id] if show_env else []) + ([summary.algo] if show_algo else [])
                       + [summary.run_name]) for summary in summaries]
    return labels if len(set(labels)) == len(labels) else [summary.path for summary in summaries]


def figure_title(summaries: Sequence[RunSummary]) -> str:
    """'env · algo' when the runs share both, the env when they share only that, else a generic title."""
    pairs = sorted({(summary.env_id, summary.algo) for summary in summaries})
    if len(pairs) == 1:
        return " · ".join(pairs[0])
    return pairs[0][0] if len({env_id for env_id, _ in pairs}) == 1 else "evaluation returns"


@dataclass(frozen=True)
class EnvPanel:
    """One env's runs, drawn on an axes of their own: returns of different envs are not comparable."""

    env_id: str
    title: str
    curves: tuple[EvaluationCurve, ...]


def env_panels(run_dirs: Sequence[Path]) -> list[EnvPanel]:
    """The runs grouped by env (env ids sorted, runs in the given order), each group labelled on its own."""
    summaries = [summarize(run_dir) for run_dir in run_dirs]
    panels = []
    for env_id in sorted({summary.env_id for summary in summaries}):
        members = [(run_dir, summary) for run_dir, summary in zip(run_dirs, summaries) if summary.env_id == env_id]
        labels = run_labels([summary for _, summary in members])
        curves = tuple(read_evaluations(run_dir, label) for (run_dir, _), label in zip(members, labels))
        panels.append(EnvPanel(env_id, figure_title([summary for _, summary in members]), curves))
    return panels


def evaluation_figure(paths: Sequence[Path]) -> Figure:
    """One panel per env with each run's mean evaluation return, its min-max band and a star at each new best."""
    return draw_panels(env_panels(expand_run_dirs(paths)))


def compact_count(value: float) -> str:
    """A step count in at most 3 significant digits and a suffix (1.5k, 100k, 10M), so tick labels stay short."""
    magnitude = abs(value)
    units = [(1e9, "B"), (1e6, "M"), (1e3, "k"), (1.0, "")]
    position = next((index for index, (unit, _) in enumerate(units) if magnitude >= unit), len(units) - 1)
    number = float(f"{magnitude / units[position][0]:.3g}")
    if number >= 1000 and position > 0:  # 999,999 rounds to 1000k: say 1M
        position -= 1
        number = float(f"{magnitude / units[position][0]:.3g}")
    return f"{'-' if value < 0 and number else ''}{number:g}{units[position][1]}"


def panel_grid(panel_count: int) -> tuple[int, int]:
    """(rows, columns): at most 3 panels a row, rows filled evenly (4 panels are 2 x 2)."""
    rows = -(-panel_count // MAX_PANELS_PER_ROW)
    return rows, -(-panel_count // rows)


def draw_panels(panels: Sequence[EnvPanel]) -> Figure:
    """One axes per panel, sharing nothing; on each, one Line2D per curve (new bests starred) and one band per curve."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    rows, columns = panel_grid(len(panels))
    size = SINGLE_PANEL_SIZE if len(panels) == 1 else (PANEL_SIZE[0] * columns, PANEL_SIZE[1] * rows)
    figure = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(figure)
    for index, panel in enumerate(panels):
        axes = figure.add_subplot(rows, columns, index + 1)
        for curve_index, curve in enumerate(panel.curves):
            color = f"C{curve_index % 10}"
            best_indices = [position for position, saved in enumerate(curve.saved) if saved]
            axes.fill_between(curve.steps, curve.mins, curve.maxs, color=color, alpha=0.15, linewidth=0)
            axes.plot(curve.steps, curve.means, color=color, label=curve.label, markersize=11,
                      marker=BEST_MARKER if best_indices else None, markevery=best_indices or None)
        handles, _ = axes.get_legend_handles_labels()
        if any(any(curve.saved) for curve in panel.curves):
            handles.append(Line2D([], [], color="gray", linestyle="none", marker=BEST_MARKER, markersize=11,
                                  label="new best"))
        handles.append(Patch(color="gray", alpha=0.15, linewidth=0, label="min-max band"))
        axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0, fontsize="small")
        axes.set(title=panel.title, xlabel="env steps", ylabel="mean evaluation return")
        bins = SINGLE_PANEL_X_BINS if len(panels) == 1 else PANEL_X_BINS
        axes.xaxis.set_major_locator(MaxNLocator(nbins=bins, steps=[1, 2, 2.5, 5, 10], integer=True))
        axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: compact_count(value)))
        axes.grid(alpha=0.3)
    return figure


def check_out_path(out: Path) -> Path:
    """The --out path, refused before any work if its suffix or folder is wrong."""
    out = Path(out)
    if out.suffix.lower() not in IMAGE_SUFFIXES:
        raise PlotError(f"--out must end in {', '.join(IMAGE_SUFFIXES[:-1])} or {IMAGE_SUFFIXES[-1]}, got {str(out)!r}")
    if not out.parent.is_dir():
        raise PlotError(f"--out folder {out.parent} does not exist; create it or choose another path")
    return out


def default_out_path(run_dirs: Sequence[Path]) -> Path:
    """RUN_DIR/evaluations.png for one run, ./champion-plot.png for several."""
    return Path(run_dirs[0]) / ONE_RUN_IMAGE if len(run_dirs) == 1 else Path(SEVERAL_RUNS_IMAGE)


def save_figure(figure: Figure, out: Path) -> Path:
    """Write the figure to ``out`` atomically (temp file in the same folder, then rename)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format=Path(out).suffix.lower().lstrip("."), dpi=100)
    atomic_write_bytes(Path(out), buffer.getvalue())
    return Path(out)


@dataclass(frozen=True)
class WrittenPlot:
    """Where the figure went and the envs it has a panel for (in panel order)."""

    path: Path
    env_ids: tuple[str, ...]


def plot_runs(paths: Sequence[Path], out: Path | None = None) -> WrittenPlot:
    """Draw the evaluation curves of the runs in ``paths`` and write them to ``out`` (or the default)."""
    out = None if out is None else check_out_path(out)
    run_dirs = expand_run_dirs(paths)
    panels = env_panels(run_dirs)
    written = save_figure(draw_panels(panels), default_out_path(run_dirs) if out is None else out)
    return WrittenPlot(written, tuple(panel.env_id for panel in panels))
