"""Replay recorded cuSPARSELt searches as if each had been cut short after a few algorithms
per layout, in three orders (ascending ids, descending ids, bit-reversed), and print how far
the best configuration found is from the best of the full search. This is the evidence for
the descending order in src/cuda/gemm.cu's search.

Inputs: tuning records (PRUNUS_CSLT_CACHE files: "done GPU DTYPE LAYOUT ALG SPLIT N K M US")
and/or PRUNUS_CSLT_VERBOSE=1 logs ("cuSPARSELt NxK M=.. layout L alg A split S: T us").

    python3 bench/gpu/replay_capped_search.py docs/data/h200_tuning_record_full_searches.txt \\
        docs/data/h200_tuning_record_cusparselt_0.10.0.txt docs/data/h100_cuda_test_verbose_search.err --tries 13
"""
import argparse
import re

VERBOSE = re.compile(r"cuSPARSELt (\d+)x(\d+) M=(\d+) layout (\d+) alg (\d+) split (-?\d+): ([\d.]+) us")


def bit_reversed(n):
    bits = max(1, (n - 1).bit_length())
    return [r for r in (int(format(i, f"0{bits}b")[::-1], 2) for i in range(1 << bits)) if r < n]


def load(paths):
    searches = {}  # (file, gpu, dtype, n, k, m) -> {layout: {alg: us}}
    for path in paths:
        for line in open(path):
            p = line.split()
            if len(p) == 10 and p[0] == "done":
                gpu, dt, lay, alg, _, n, k, m, us = p[1:10]
                if float(us) > 0 and int(alg) >= 0:
                    searches.setdefault((path, gpu, dt, n, k, m), {}).setdefault(int(lay), {})[int(alg)] = float(us)
            elif (v := VERBOSE.match(line)):
                n, k, m, lay, alg, _, us = v.groups()
                searches.setdefault((path, "", "", n, k, m), {}).setdefault(int(lay), {})[int(alg)] = float(us)
    return searches


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--tries", type=int, default=13, help="algorithms per layout before the time limit")
    ap.add_argument("--min-configs", type=int, default=40, help="only searches that timed this many")
    a = ap.parse_args()
    worst = {"ascending": 1.0, "descending": 1.0, "bit-reversed": 1.0}
    for (path, gpu, dt, n, k, m), layouts in sorted(load(a.files).items()):
        times = [t for d in layouts.values() for t in d.values()]
        if len(times) < a.min_configs:
            continue
        best, row = min(times), []
        for name in worst:
            found = []
            for d in layouts.values():
                ids = max(d) + 1
                order = {"ascending": list(range(ids)), "descending": list(range(ids - 1, -1, -1)),
                         "bit-reversed": bit_reversed(ids)}[name]
                tried = [0] + [i for i in order if i != 0][:a.tries]  # the default (alg 0) is always timed
                found += [d[i] for i in tried if i in d]
            ratio = min(found) / best
            worst[name] = max(worst[name], ratio)
            row.append(f"{name} {ratio:.2f}")
        print(f"{path.split('/')[-1]} {gpu} dtype {dt} {n}x{k} M={m}: {len(times)} configurations; " + ", ".join(row))
    print("worst: " + ", ".join(f"{k} {v:.2f}" for k, v in worst.items()))


if __name__ == "__main__":
    main()
