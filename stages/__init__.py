"""Stages: plain functions from input artifacts to output artifacts, `stage(run, iteration, force=False)`."""
