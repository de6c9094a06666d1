"""Reading a run back: per-iteration summaries and the plot, `spo inspect`, trackers, `spo compare`'s report."""
