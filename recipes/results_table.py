#!/usr/bin/env python3
"""The method-comparison table of docs/results.md from the recipes' report.json files.

    for r in <recipes>; do build/prunus run recipes/$r.yaml; done            # seed 0 -> out/<name>
    build/prunus run recipes/$r.yaml --seed 1 -o out/$r-seed1                # second seeds
    python3 recipes/results_table.py

Seed 0 is read from the recipe's own out directory (or out/<recipe>-seed0), seed 1 from
out/<recipe>-seed1 when it exists.
"""
import json
import os
import re

ROWS = [
    ("lenet300_fmnist_2of4", "2:4 (N:M), magnitude, one-shot + 30 ep FT"),
    ("lenet300_fmnist_2of4_srste", "2:4 (N:M), SR-STE (λ 2e-4, mask re-chosen every step), 30 ep"),
    ("lenet300_fmnist_block4x4_80", "block 4×4 80%, magnitude, gradual"),
    ("lenet300_fmnist_gradual90", "unstructured 90%, magnitude global, gradual (main job)"),
    ("lenet300_fmnist_magnitude95", "95% magnitude global, gradual"),
    ("lenet300_fmnist_magnitude95_kd", "95% magnitude global, gradual + distillation"),
    ("lenet300_fmnist_lamp95", "95% LAMP global, gradual"),
    ("lenet300_fmnist_sensitivity95", "95% per-layer from `prunus sensitivity`, gradual"),
    ("lenet300_fmnist_taylor95", "95% Taylor \\|w·g\\| global, gradual"),
    ("lenet300_fmnist_movement95", "95% movement global, gradual"),
    ("lenet300_fmnist_oneshot95", "95% magnitude global, one-shot + 30 ep FT"),
    ("lenet300_fmnist_imp95", "95% IMP, 5 rounds × 6 ep, no rewind"),
    ("lenet300_fmnist_imp95_rewind", "95% IMP, 5 rounds × 20 ep, rewind to epoch 2"),
    ("lenet300_fmnist_random95", "95% random (per layer), gradual"),
    ("lenet300_fmnist_snip95_init", "95% SNIP at init, then 40 ep from scratch"),
    ("lenet300_fmnist_synflow95_init", "95% SynFlow at init, then 40 ep from scratch"),
    ("lenet300_fmnist_random95_init", "95% random at init, then 40 ep from scratch"),
]


def report(path):
    f = os.path.join(path, "report.json")
    return json.load(open(f)) if os.path.exists(f) else None


def main():
    print("| method (recipe) | sparsity | dense acc. (seed 0) | sparse acc. seed 0 | seed 1 | mean | per-layer sparsity (seed 0) |")
    print("|---|---|---|---|---|---|---|")
    for recipe, label in ROWS:
        text = open(f"recipes/{recipe}.yaml").read()
        out = re.search(r"^out: (.*)$", text, re.M).group(1).strip()
        r0 = report(out) or report(f"out/{recipe}-seed0")
        r1 = report(f"out/{recipe}-seed1")
        if not r0:
            continue
        a0 = 100 * r0["sparse"]["test_accuracy"]
        a1 = 100 * r1["sparse"]["test_accuracy"] if r1 else None
        mean = f"**{(a0 + a1) / 2:.2f}**" if a1 is not None else f"**{a0:.2f}**"
        layers = ", ".join(f"{100 * l['sparsity']:.1f}" for l in r0["layers"])
        print(f"| {label} (`{recipe}`) | {100 * r0['total_sparsity']:.2f}% | {100 * r0['dense']['test_accuracy']:.2f} "
              f"| {a0:.2f} | {f'{a1:.2f}' if a1 is not None else '—'} | {mean} | {layers} |")


if __name__ == "__main__":
    main()
