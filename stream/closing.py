"""A base for objects that hold a resource: ``close()`` releases it, and ``with obj:`` closes on the way out."""
from __future__ import annotations


class Closeable:
    """``close()`` (a no-op here; subclasses release what they hold) and the context manager that calls it."""

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
