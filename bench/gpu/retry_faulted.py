"""Drop the start lines without a done line from a cuSPARSELt tuning record (configurations
that took a process down), so that the next process tries them again: used after a fix to the
backend that may have removed the cause. Usage: python3 retry_faulted.py TUNING.txt"""
import sys

path = sys.argv[1]
lines = open(path).read().splitlines()
key = lambda l: " ".join(l.split()[1:9])
finished = {key(l) for l in lines if l.startswith("done ")}
kept = [l for l in lines if not (l.startswith("start ") and key(l) not in finished)]
open(path, "w").write("\n".join(kept) + "\n")
print(f"{path}: {len(lines) - len(kept)} faulted configurations will be tried again")
