"""SPO-tree nodes: a prompt's root id and the response token prefix of every node (docs/design.md#tree-sampling).

>>> levels = [[{"node_id": "0.1", "parent_id": "0", "segment_ids": [5, 6]}],
...           [{"node_id": "0.1.0", "parent_id": "0.1", "segment_ids": [7]}]]
>>> tree_prefixes([{"prompt_index": 0}], levels)["0.1.0"]
[5, 6, 7]
"""

from __future__ import annotations


def root_id(prompt_index: int) -> str:
    """The node id of a prompt's tree root (the prompt itself); children append `.<j>`."""
    return str(prompt_index)


def tree_prefixes(prompts: list[dict], levels: list[list[dict]]) -> dict[str, list[int]]:
    """Response token ids from the prompt through each node (the node's own segment included)."""
    prefixes = {root_id(p["prompt_index"]): [] for p in prompts}
    for level in levels:
        for node in level:
            prefixes[node["node_id"]] = prefixes[node["parent_id"]] + list(node["segment_ids"])
    return prefixes
