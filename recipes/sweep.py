#!/usr/bin/env python3
"""The sparsity-level grid of docs/results.md: every method at 50/80/90/95/98% on LeNet-5 and
LeNet-300-100, each cell one `prunus run` of a shipped recipe with --set overrides.

    python3 recipes/sweep.py run [--model lenet5|lenet300] [--only SUBSTRING] [--seed N] [--reverse]   # missing cells
    python3 recipes/sweep.py list [--seed N]                                   # the commands, one a line
    python3 recipes/sweep.py table [--seed N]                                  # markdown from out/sweep/
    python3 recipes/sweep.py record                                            # out/sweep/ -> docs/data/sweep.jsonl
    python3 recipes/sweep.py means                                             # seeds 0 and 1: both values and the mean

--seed N (default 0) runs the grid again with another seed: cells go to out/sweep/<cell>-seedN,
and the fine-tuning rows start from that seed's dense model (DENSE_BY_SEED), so seeds differ
in the dense training too.

Resumable: a cell whose out/sweep/<cell>/report.json exists is skipped, so an interrupted sweep
continues where it stopped. `record` keeps each finished cell's numbers (accuracies, sparsity,
wall time, command) in docs/data/sweep.jsonl, which is committed: `run` and `table` read it
too, so a fresh checkout continues the grid instead of redoing it. Two workers may run at once
(one with --reverse): each cell is claimed by a lock file while it runs. Cells that fine-tune a trained model start from the seed-0 dense
model its recipe trains (`input:` + `train.epochs=0`); the dense training is identical across
the recipes of one model (same schedule, same seed), so this only saves the repeated 40 (12)
epochs. IMP with rewinding needs the epoch-2 weights of that training and trains again.
"""
import functools
import json
import os
import re
import subprocess
import sys

LEVELS = [0.5, 0.8, 0.9, 0.95, 0.98]
PRUNUS = os.environ.get("PRUNUS", "build/prunus")

# (model, dense model the fine-tuning rows start from, overrides that turn a LeNet-300-100 recipe
#  into the model's own schedule)
MODELS = {
    "lenet5": ("out/lenet5-fmnist-magnitude95/dense.safetensors",
               ["model=lenet5", "threads=1", "finetune.epochs=12"]),
    "lenet300": ("out/lenet300-fmnist-magnitude95/dense.safetensors", ["threads=1"]),
}

# (cell name, recipe, overrides, starts from the trained dense model, gradual schedule). Gradual
# rows ramp over the first half of fine-tuning: LeNet-5 fine-tunes 12 epochs, so its ramp ends at 6.
METHODS = [
    ("magnitude-gradual", "lenet300_fmnist_magnitude95", [], True, True),
    ("magnitude-oneshot-ft", "lenet300_fmnist_oneshot95", [], True, False),
    ("activation-oneshot-ft", "lenet300_fmnist_activation95", [], True, False),
    ("random-gradual", "lenet300_fmnist_random95", [], True, True),
    ("imp-rewind", "lenet300_fmnist_imp95_rewind", [], False, False),
    ("snip-init", "lenet300_fmnist_snip95_init", [], False, False),
    ("synflow-init", "lenet300_fmnist_synflow95_init", [], False, False),
    ("movement-gradual", "lenet300_fmnist_movement95", [], True, True),
    ("taylor-gradual", "lenet300_fmnist_taylor95", [], True, True),
]
# LeNet-5's own lengths for the rows that do not fine-tune a trained model: IMP trains 12 epochs
# and retrains 8 a round (5 rounds); pruning at init trains the sparse net 24 epochs (= 12 + 12).
LENET5_EXTRA = {"imp-rewind": ["train.epochs=12", "finetune.epochs=8"], "snip-init": ["finetune.epochs=24"],
                "synflow-init": ["finetune.epochs=24"]}
# Patterns at a fixed level.
PATTERNS = [
    ("2of4-oneshot-ft", "lenet300_fmnist_2of4", [], False),
    ("4of8-oneshot-ft", "lenet300_fmnist_2of4", ["prune.pattern=4:8"], False),
    ("block4x4-80-gradual", "lenet300_fmnist_block4x4_80", [], True),
    ("block4x4-90-gradual", "lenet300_fmnist_block4x4_80", ["prune.sparsity=0.9"], True),
]


# Dense models of other seeds (the recipes' own dense training with --set seed=N).
DENSE_BY_SEED = {
    ("lenet5", 1): "out/sweep-seed1/lenet5-magnitude-gradual-95/dense.safetensors",
    ("lenet300", 1): "out/lenet300_fmnist_magnitude95-seed1/dense.safetensors",
}


# How each dense model above is made (a recipe's own run; deterministic, so a fresh checkout
# makes the same bytes). `run` makes a missing one first.
DENSE_COMMANDS = {
    ("lenet5", 0): ["run", "recipes/lenet5_fmnist_magnitude95.yaml", "--no-progress"],
    ("lenet300", 0): ["run", "recipes/lenet300_fmnist_magnitude95.yaml", "--no-progress"],
    ("lenet5", 1): ["run", "recipes/lenet5_fmnist_magnitude95.yaml", "--no-progress", "--set", "seed=1", "-o",
                    "out/sweep-seed1/lenet5-magnitude-gradual-95"],
    ("lenet300", 1): ["run", "recipes/lenet300_fmnist_magnitude95.yaml", "--no-progress", "--set", "seed=1", "-o",
                      "out/lenet300_fmnist_magnitude95-seed1"],
}


def seed_of(args):
    return int(args[args.index("--seed") + 1]) if "--seed" in args else 0


def cells(model, seed=0):
    dense, base = MODELS[model]
    if seed:
        dense = DENSE_BY_SEED[(model, seed)]
        base = list(base) + [f"seed={seed}"]
    out = []

    def sets_for(name, extra, from_dense, gradual):
        sets = list(base) + list(extra)
        if model == "lenet5":
            sets += LENET5_EXTRA.get(name, []) + (["prune.schedule.end_epoch=6"] if gradual else [])
        if from_dense:
            sets += [f"input={dense}", "train.epochs=0"]
        return sets

    for level in LEVELS:
        for method, recipe, extra, from_dense, gradual in METHODS:
            sets = sets_for(method, extra + [f"prune.sparsity={level}"], from_dense, gradual)
            out.append((f"{model}-{method}-{int(round(level * 100))}", recipe, sets))
    for name, recipe, extra, gradual in PATTERNS:
        out.append((f"{model}-{name}", recipe, sets_for(name, extra, True, gradual)))
    suffix = f"-seed{seed}" if seed else ""
    return [(name + suffix, recipe, sets) for name, recipe, sets in out]


def command(cell):
    name, recipe, sets = cell
    cmd = [PRUNUS, "run", f"recipes/{recipe}.yaml", "-o", f"out/sweep/{name}", "--no-progress"]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def all_cells(args):
    models = [args[args.index("--model") + 1]] if "--model" in args else ["lenet5", "lenet300"]
    only = args[args.index("--only") + 1] if "--only" in args else ""
    return [c for m in models for c in cells(m, seed_of(args)) if only in c[0]]


RECORD = "docs/data/sweep.jsonl"


@functools.lru_cache(maxsize=None)
def recorded():
    out = {}
    if os.path.exists(RECORD):
        for line in open(RECORD):
            if line.strip():
                r = json.loads(line)
                out[r["cell"]] = r
    return out


def report(name):
    p = f"out/sweep/{name}/report.json"
    if os.path.exists(p):
        return json.load(open(p))
    r = recorded().get(name)
    if r is None:
        return None
    # The fields `table` reads, from the recorded line.
    return {"sparse": {"test_accuracy": r["test_accuracy"]}, "dense": {"test_accuracy": r["dense_accuracy"]},
            "total_sparsity": r["total_sparsity"]}


def record(args):
    cells_by_name = {c[0]: c for m in MODELS for seed in (0, 1) for c in cells(m, seed) if (m, seed) in DENSE_BY_SEED or seed == 0}
    rows = dict(recorded())
    for name in sorted(os.listdir("out/sweep")) if os.path.isdir("out/sweep") else []:
        p = f"out/sweep/{name}/report.json"
        if not os.path.exists(p) or name not in cells_by_name:
            continue
        r = json.load(open(p))
        rows[name] = {"cell": name, "test_accuracy": r["sparse"]["test_accuracy"],
                      "dense_accuracy": r["dense"]["test_accuracy"], "total_sparsity": r["total_sparsity"],
                      "seconds": round(r.get("total_seconds", 0), 1), "prunus_version": r.get("prunus_version", ""),
                      "command": " ".join(command(cells_by_name[name]))}
    os.makedirs(os.path.dirname(RECORD), exist_ok=True)
    tmp = RECORD + ".tmp"
    with open(tmp, "w") as f:
        for name in sorted(rows):
            f.write(json.dumps(rows[name], sort_keys=True) + "\n")
    os.replace(tmp, RECORD)
    print(f"{len(rows)} cells in {RECORD}")


def table(args):
    seed = seed_of(args)
    suffix = f"-seed{seed}" if seed else ""
    for model in ["lenet5", "lenet300"]:
        rows = {}
        for name, _, _ in cells(model, seed):
            r = report(name)
            if r:
                rows[name] = r
        if not rows:
            continue
        def cell(name):
            r = rows.get(name + suffix)
            return f"{100 * r['sparse']['test_accuracy']:.2f}" if r else "—"

        print_grid(f"{model}: test accuracy (%) after pruning and recovery, seed {seed}", model, cell)
        dense = next((r["dense"]["test_accuracy"] for r in rows.values() if r.get("dense")), None)
        for name, *_ in PATTERNS:
            r = rows.get(f"{model}-{name}{suffix}")
            if r:
                print(f"| {name} ({100 * r['total_sparsity']:.1f}% zero) | {100 * r['sparse']['test_accuracy']:.2f} |" +
                      " |" * (len(LEVELS) - 1))
        if dense is not None:
            print(f"\ndense (the model the fine-tuning rows start from): {100 * dense:.2f}%")


def print_grid(title, model, cell):
    """A markdown table, methods × levels; cell(name) gives the text of cell `name` (seed 0 name)."""
    print(f"\n{title}\n")
    print("| method | " + " | ".join(f"{int(l * 100)}%" for l in LEVELS) + " |")
    print("|---|" + "---|" * len(LEVELS))
    for method, *_ in METHODS:
        vals = [cell(f"{model}-{method}-{int(round(level * 100))}") for level in LEVELS]
        print(f"| {method} | " + " | ".join(vals) + " |")


def means(args):
    """Per cell: seed 0 / seed 1 and their mean where both exist (else the one there is)."""
    def cell(name):
        a, b = report(name), report(name + "-seed1")
        if a and b:
            x, y = 100 * a["sparse"]["test_accuracy"], 100 * b["sparse"]["test_accuracy"]
            return f"{x:.2f} / {y:.2f} **{(x + y) / 2:.2f}**"
        if a or b:
            return f"{100 * (a or b)['sparse']['test_accuracy']:.2f} (seed {0 if a else 1})"
        return "—"

    for model in ["lenet5", "lenet300"]:
        print_grid(f"{model}: test accuracy (%), seed 0 / seed 1 and **mean**", model, cell)


def main():
    args = sys.argv[1:]
    verb = args[0] if args else "list"
    if verb == "table":
        return table(args)
    if verb == "record":
        return record(args)
    if verb == "means":
        return means(args)
    todo = all_cells(args)
    if verb == "list":
        for c in todo:
            print(" ".join(command(c)))
        return
    # The 95% column (the floors) first, then the others.
    order = {"95": 0, "90": 1, "80": 2, "50": 3, "98": 4}
    level = lambda name: re.sub(r"-seed\d+$", "", name).rsplit("-", 1)[-1]
    todo.sort(key=lambda c: order.get(level(c[0]), 5))
    models = [args[args.index("--model") + 1]] if "--model" in args else ["lenet5", "lenet300"]
    seed = seed_of(args)
    for m in models:
        dense = DENSE_BY_SEED[(m, seed)] if seed else MODELS[m][0]
        if not os.path.exists(dense) and any(not report(c[0]) for c in todo if c[0].startswith(m + "-")):
            print(f"[sweep] making the dense model {dense}", flush=True)
            subprocess.run([PRUNUS] + DENSE_COMMANDS[(m, seed)], check=True)
    if "--reverse" in args:  # a second worker on the same cells meets the first in the middle
        todo.reverse()
    os.makedirs("out/sweep", exist_ok=True)
    for i, c in enumerate(todo):
        if report(c[0]) or not take(c[0]):
            continue
        try:
            print(f"[sweep {i + 1}/{len(todo)}] {c[0]}", flush=True)
            rc = subprocess.run(command(c)).returncode
            if rc != 0:
                print(f"[sweep] {c[0]} failed (exit {rc})", flush=True)
        finally:
            os.remove(f"out/sweep/{c[0]}.lock")


def take(name):
    """Claims a cell for this process (out/sweep/<cell>.lock holds its pid); False while another
    live process holds it. A lock whose process is gone is taken over."""
    lock = f"out/sweep/{name}.lock"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            return True
        except FileExistsError:
            try:
                os.kill(int(open(lock).read() or 0), 0)
                return False  # alive: someone else runs it
            except (ProcessLookupError, ValueError):
                os.remove(lock)  # stale
    return False


if __name__ == "__main__":
    main()
