#!/usr/bin/env python3
"""Per-kernel GPU time of decode steps, from an Nsight Compute CSV (`ncu --csv --page raw --metrics
gpu__time_duration.sum`) of `punica bench forward`: steps end at each `sample_rows` launch.

    python3 scripts/kernel_profile.py PROFILE.csv STEP [STEP ...]   (1-based step numbers)
"""
import collections
import csv
import sys


def main():
    path, steps = sys.argv[1], [int(s) for s in sys.argv[2:]]
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f)]
    start = next(i for i, r in enumerate(rows) if "Kernel Name" in r)
    header = rows[start]
    name_col, time_col = header.index("Kernel Name"), header.index("gpu__time_duration.sum")
    unit = rows[start + 1][time_col]
    scale = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3}[unit]
    launches = [(r[name_col], float(r[time_col].replace(",", "")) * scale) for r in rows[start + 2:] if len(r) > time_col]
    step_launches, current = [], []
    for name, micros in launches:
        current.append((name, micros))
        if name.startswith("sample_rows"):
            step_launches.append(current)
            current = []
    for step in steps:
        kernels = step_launches[step - 1]
        by_name = collections.defaultdict(lambda: [0, 0.0])
        for name, micros in kernels:
            short = name.split("(")[0][:60]
            by_name[short][0] += 1
            by_name[short][1] += micros
        total = sum(m for _, m in kernels)
        print(f"step {step}: {len(kernels)} launches, {total / 1000:.3f} ms of kernel time")
        print("| kernel | launches | total µs | share |")
        print("|---|---|---|---|")
        for short, (count, micros) in sorted(by_name.items(), key=lambda item: -item[1][1]):
            print(f"| {short} | {count} | {micros:.0f} | {100 * micros / total:.1f} % |")
        print()


if __name__ == "__main__":
    main()
