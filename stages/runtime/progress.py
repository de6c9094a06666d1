"""Progress bars for long stages (tqdm on stderr; quiet when SPO_PROGRESS=0)."""

from __future__ import annotations

import os

from tqdm.auto import tqdm


def progress_bar(total: int, desc: str) -> tqdm:
    """A bar that counts samples or steps; used as a context manager."""
    return tqdm(total=total, desc=desc, unit="it", leave=False, dynamic_ncols=True,
                disable=os.environ.get("SPO_PROGRESS", "1") == "0")
