"""Serve single files from installed packages (plotly.js from the plotly wheel)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.staticfiles.finders import BaseFinder
from django.core.checks import Error
from django.core.files.storage import FileSystemStorage


def _resolve(source: Path | str) -> Path:
    if isinstance(source, Path):
        return source
    package, _, relative = source.partition(":")
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return Path("/nonexistent") / package / relative
    return Path(spec.origin).parent / relative


class VendorFinder(BaseFinder):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.files = {name: _resolve(src) for name, src in settings.VENDOR_STATIC_FILES.items()}

    def check(self, **kwargs: Any) -> list[Error]:
        return [
            Error(f"static file {name} is missing at {path}", hint="run `make install` (pip install)")
            for name, path in self.files.items()
            if not path.is_file()
        ]

    def find(self, path: str, find_all: bool = False, **kwargs: Any) -> str | list[str]:
        source = self.files.get(path)
        if source is None or not source.is_file():
            return [] if find_all or kwargs.get("all") else ""
        return [str(source)] if find_all or kwargs.get("all") else str(source)

    def list(self, ignore_patterns: Any) -> Any:
        for name, source in self.files.items():
            if source.is_file():
                storage = FileSystemStorage(location=str(source.parent))
                storage.prefix = str(Path(name).parent)  # type: ignore[attr-defined]
                yield source.name, storage
