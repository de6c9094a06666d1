"""Sampling machinery: engines shared by a flow's stages, the one sampling sequence, Dask shards and child-process launch."""
