"""Where the CLI's output goes: results on stdout, progress and notes on stderr, and TensorFlow's start-up
lines filtered out of stderr without losing anything else (a crash message above all)."""

import os
import re
import subprocess
import sys

from champion.runners.logs.stderr_filter import forward
from champion.runners.store.best_store import crowned_entry

CHAMPION = [sys.executable, "-c", "from champion.runners.cli.main import main; main()"]
GLOG_LINE = re.compile(r"^[IWEF]\d{4} [\d:.]+ +\d+ \S+:\d+\]", re.MULTILINE)
ONEDNN = (b"I0000 00:00:1796532540.476281   31700 port.cc:153] oneDNN custom operations are on. You may see slightly "
          b"different numerical results due to floating-point round-off errors from different computation orders. To "
          b"turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.")
NO_CUDA = b"I0000 00:00:1796532540.476533   31700 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used."
ABSL_NOTE = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
CROWNED_LINE = "champion (crowned on held-out episodes): "
"""How a run's last lines name its crowned champion (``champion.runners.training.CROWNED_LINE``)."""


def filtered(*chunks: bytes) -> bytes:
    """What ``forward`` passes on when the writer sends ``chunks`` (each as one write)."""
    read_end, write_end = os.pipe()
    out_read, out_write = os.pipe()
    for chunk in chunks:
        os.write(write_end, chunk)
    os.close(write_end)
    forward(read_end, out_write)
    os.close(out_write)
    data = os.read(out_read, 1 << 20)
    os.close(read_end), os.close(out_read)
    return data


def test_forward_leaves_out_only_tensorflows_start_up_lines():
    other_info = b"I0000 00:00:1796532542.068516   31700 cuda_executor.cc:1] something TensorFlow wants seen."
    crash = b"Fatal Python error: Illegal instruction"
    xnnpack = b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU."  # when export checks a .tflite
    ale = [b"A.L.E: Arcade Learning Environment (version 0.12.1+8a8fafb)", b"[Powered by Stella]"]  # ale-py's banner
    data = b"\n".join([ABSL_NOTE, ONEDNN, NO_CUDA, b"champion: warning: real", xnnpack, *ale, other_info, crash, b""])
    assert filtered(data) == b"champion: warning: real\n" + other_info + b"\n" + crash + b"\n"
    # a harmless line cut in two by the pipe is still recognised; the same text inside another line is not
    assert filtered(NO_CUDA[:20], NO_CUDA[20:] + b"\nmy env says: " + NO_CUDA + b"\n") == b"my env says: " + NO_CUDA + b"\n"


def test_forward_leaves_out_mujocos_note_and_only_the_empty_line_after_it():
    note = (b"WARNING: compiler attribute 'settotalmass' is deprecated and will be removed in a future release: scale "
            b"the masses and densities in the model, or call mj_setTotalmass and mj_setConst on the compiled model")
    assert filtered(note + b"\n\n" + b"step 1\n\nstep 2\n") == b"step 1\n\nstep 2\n"


def test_forward_passes_a_partial_line_on_at_once_and_keeps_what_ends_without_a_newline():
    # a progress bar's redraw has no newline; it must not wait for one (nor be lost at the end)
    assert filtered(b"\r\x1b[2Ktraining 10/100", b"\r\x1b[2Ktraining 20/100") == b"\r\x1b[2Ktraining 10/100\r\x1b[2Ktraining 20/100"
    assert filtered(b"I0000 00:00:1.0 1 unknown.cc:1] cut off by a crash") == b"I0000 00:00:1.0 1 unknown.cc:1] cut off by a crash"


def test_a_crash_message_still_arrives_through_the_filter():
    """The filter process outlives the process it filters: what a dying process writes last gets through."""
    harmless = ONEDNN + b"\n" + NO_CUDA + b"\n"
    program = ("import faulthandler, os, signal, sys\n"
               "import champion\n"
               "assert champion.quiet_tensorflow()\n"
               f"os.write(2, {harmless!r})\n"
               "faulthandler.enable()\n"
               "os.kill(os.getpid(), signal.SIGSEGV)\n")
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, timeout=60)
    assert done.returncode == -11
    assert done.stderr.startswith(b"Fatal Python error: Segmentation fault")
    assert b"oneDNN" not in done.stderr and b"cuda drivers" not in done.stderr


def test_train_writes_results_to_stdout_and_notes_to_stderr_without_tensorflow_lines_cold_or_warm(tmp_path):
    """`champion train ... > train.log` keeps the header, every evaluation and where the best policy is; stderr
    has no TensorFlow C++ line, on the first run nor on the second, which loads its compiled step from the
    cache (there XLA's loader warns about CPU tuning features such as +prefer-no-scatter on some CPUs)."""
    environment = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    environment.update(CHAMPION_XLA_CACHE=str(tmp_path / "cache"), TF_XLA_FLAGS="")  # an in-process run here set it
    for run_name in ("cold", "warm"):
        done = subprocess.run(CHAMPION + ["train", "CartPole-v1", "--total-steps", "2000", "--eval-every", "1000",
                                          "--results-dir", str(tmp_path), "--run-name", run_name, "--no-media"],
                              capture_output=True, text=True, timeout=300, env=environment)
        assert done.returncode == 0, done.stderr
        run_dir = tmp_path / "CartPole-v1" / "ppo" / run_name
        out = done.stdout.splitlines()
        assert out[0].startswith(f"champion ppo on CartPole-v1 (graph engine): step 0 of 2,000 -> {run_dir}")
        assert [line.split()[1] for line in out if line.startswith("step ")] == ["1,024", "2,048"]  # each evaluation
        # the run's champion: the entry its crown record names (tests/test_crown_around.py: and without a crown)
        [named] = [line.removeprefix(CROWNED_LINE) for line in out if line.startswith(CROWNED_LINE)]
        assert named == str(crowned_entry(run_dir / "best")) and os.path.isdir(named)
        assert out[-1] == f"replay it with: champion replay {run_dir}"
        # stderr: the budget note and a line per round of the crown (no progress line: not a terminal), nothing
        # from TensorFlow
        notes = done.stderr.splitlines()
        assert notes[0] == "note: 2,000 steps rounded up to 2,048: whole rollouts of 32 steps x 8 envs"
        assert notes[1].startswith("crown: 10 held-out episodes per candidate; ") and len(notes) <= 6
        assert all(re.fullmatch(r"crown: \d+ held-out episodes per candidate; .* in the race; [\d.]+s of its \d+s limit",
                                line) for line in notes[1:]), notes
    assert any(path.suffix == ".pb" for path in (tmp_path / "cache").rglob("*"))  # the second run had a cache to load


def test_from_python_quiet_tensorflow_is_opt_in_and_champion_tf_logs_turns_it_off():
    program = ("import champion, sys\n"
               "print(champion.quiet_tensorflow())\n"
               "import tensorflow as tf\n"
               "print(int(tf.reduce_sum(tf.ones([3]))))\n")
    environment = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120, env=environment)
    assert done.stdout.split() == ["True", "3"]
    assert not GLOG_LINE.search(done.stderr) and "absl::InitializeLog" not in done.stderr
    kept = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120,
                          env={**environment, "CHAMPION_TF_LOGS": "1"})
    assert kept.stdout.split() == ["False", "3"]
    assert GLOG_LINE.search(kept.stderr)  # what they keep out: oneDNN on x86, CUDA probing or devices found


def test_the_filter_is_not_forked_once_another_thread_runs():
    """Forking a process with threads can copy a lock one of them holds; the filter then stays off."""
    program = ("import threading, time, champion\n"
               "threading.Thread(target=time.sleep, args=(1,), daemon=True).start()\n"
               "print(champion.quiet_tensorflow())\n")
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["False"]
