#!/bin/bash
# Time champion at two commits against each other, alternating, cold (fresh compile cache) then warm.
#   git worktree add /tmp/old-wt OLD_COMMIT
#   benchmarks/ab_champion.sh /tmp/old-wt . 3 > ab.txt
# Prints one line per run: code, algo, run, total seconds (start-up + loop) and the main phases.
set -euo pipefail
old=$(cd "$1" && pwd); new=$(cd "$2" && pwd); pairs=${3:-3}
python=${PYTHON:-$new/.venv/bin/python}
work=$(mktemp -d)

importable() {  # importable CODE_DIR LABEL: a folder that imports that checkout's champion, and its CLI's module
    if [ -d "$1/champion" ]; then  # one package: champion/ with agents/, envs/, runners/ under it, as pip maps them
        local shadow="$work/code-$2"
        mkdir -p "$shadow/champion" && cp "$1"/champion/*.py "$shadow/champion/"
        for folder in agents envs runners; do ln -sfn "$1/$folder" "$shadow/champion/$folder"; done
        echo "$shadow champion.runners.cli.main"
    else  # a checkout from before the champion package: top-level runners/
        echo "$1 runners.cli"
    fi
}

run() {  # run CODE_DIR LABEL ALGO CACHE NAME
    read -r path module < <(importable "$1" "$2")
    (cd "$path" && PYTHONPATH="$path" CHAMPION_XLA_CACHE="$4" "$python" -c "from $module import main; main()" \
        train CartPole-v1 --algo "$3" --results-dir "$work/results" --run-name "$5" --quiet > /dev/null 2>&1)
    "$python" - "$work/results/CartPole-v1/$3/$5/summary.json" "$2" "$3" "$5" <<'PY'
import json, sys
summary = json.load(open(sys.argv[1])); phases = summary["timings"]
trace = phases.get("tracing (graph)", 0) + phases.get("trace from cache (graph)", 0)
print(f"{sys.argv[2]} {sys.argv[3]} {sys.argv[4]} total={summary['wall_seconds'] + summary['startup_seconds']:.2f} "
      f"compile={phases.get('compile+first call (graph)', 0):.2f} trace={trace:.2f} "
      f"run={phases.get('rollout+update (graph)', 0):.2f} wait_eval={phases.get('waiting for evaluation', 0):.2f} "
      f"saving={phases.get('saving', 0):.2f} best={summary['best_mean_return']} at={summary['best_step']}")
PY
}

uptime
for pair in $(seq 0 $((pairs - 1))); do
    for algo in ppo a2c; do
        order="new old"; [ $((pair % 2)) = 1 ] && order="old new"
        for label in $order; do
            dir=$new; [ "$label" = old ] && dir=$old
            cache="$work/cache-$label-$algo-$pair"
            run "$dir" "$label" "$algo" "$cache" "cold-$label-$pair"
            run "$dir" "$label" "$algo" "$cache" "warm-$label-$pair"
        done
    done
done
uptime
