"""`make bench`: how fast govlake ingests, merges and shares, each as a ratio to a baseline
that does the least the step must do (pyarrow floors, a polars + delta-rs peer, the bare HTTP
stack). Run `python -m govlake_tools.bench --out reports/bench [--quick]`."""
