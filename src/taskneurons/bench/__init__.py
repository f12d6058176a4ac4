"""`make bench`: speed and memory as ratios against a baseline measured in the same run.

Each benchmark writes outputs/bench/<name>.json. Not a test: numbers are reported, not asserted. Speed
ratios come from interleaved pairs (baseline, candidate, baseline, candidate, ...), so that drift of the
machine hits both sides alike; every pair's ratio is kept and the verdict says "ok" / "missed" only when
a distribution-free 90 % interval of the median ratio (sign test: with 5 pairs the whole spread, with 11
all but the extreme pair on each side) is on one side of the target, else "noisy". Memory is the peak RSS (VmHWM) of a fresh
process per side, reset after the model has loaded.
"""
