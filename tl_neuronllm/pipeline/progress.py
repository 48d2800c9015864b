"""Progress bars of the pipeline that move per item, not per batch."""

from __future__ import annotations

from typing import Any

__all__ = ["ItemBar"]


class ItemBar:
    """A progress bar that moves per item (``update(n)`` after each batch of ``n`` items); nothing when off."""

    def __init__(self, enabled: bool, total: int, done: int, desc: str) -> None:
        self.bar: Any = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=done, desc=desc, unit="item")

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
