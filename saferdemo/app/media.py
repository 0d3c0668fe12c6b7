"""The app's own media folder: the chats' copies of uploads, exported pages and audits, within a size budget.

The chat shows an upload from here, not from Gradio's cache (cleaned hourly), so a later redraw never breaks.
Every file written goes through `MediaFolder`, which then deletes the oldest files until the folder is within
`Limits.media_mb`: `/submit` (which copies its images before any turn runs) and Export (a page of up to tens
of MB per click) used to grow it without end. A folder the app made itself is deleted at exit.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import shutil
import tempfile
import threading
import uuid
from pathlib import Path

from PIL import Image

SHOWN_SIDE = 1024  # the chats show uploads small (72 px high, larger on click): a copy this size is plenty


class MediaFolder:
    def __init__(self, root: str | Path | None = None, budget_mb: float = 512):
        self.owned = root is None  # made here: deleted at exit
        self.root = Path(root or tempfile.mkdtemp(prefix="saferdemo-media-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.budget = int(budget_mb * 2**20)
        self._lock = threading.Lock()
        if self.owned:
            atexit.register(self.close)

    def keep(self, image: Image.Image) -> str:
        """A copy of a (decoded) upload for the chats to show: at most SHOWN_SIDE pixels a side, as PNG."""
        shown = image.copy()
        shown.thumbnail((SHOWN_SIDE, SHOWN_SIDE))
        path = self.root / "shown" / f"{uuid.uuid4().hex}.png"
        path.parent.mkdir(exist_ok=True)
        shown.save(path)
        self.trim(keep=(path,))
        return str(path)

    def export_path(self, bundle: dict) -> Path:
        """Where a bundle's page goes: named by its content (its creation time aside), so exporting the same
        conversation again reuses the page instead of writing another (Gradio's cache, keyed by content, too)."""
        folder = self.root / "exports"
        folder.mkdir(exist_ok=True)
        same = json.dumps({k: v for k, v in bundle.items() if k != "created"}, sort_keys=True, default=str)
        return folder / f"comparison-{hashlib.sha256(same.encode()).hexdigest()[:16]}.html"

    def audit_folder(self, keep: int = 8) -> Path:
        """A new folder for an audit's files; only the newest `keep` are kept (the Audit tab serves the report
        from there, so the files must outlive the call)."""
        root = self.root / "audits"
        root.mkdir(exist_ok=True)
        folders = sorted(root.iterdir(), key=lambda p: p.stat().st_mtime)
        for old in folders[: max(0, len(folders) - keep + 1)]:
            shutil.rmtree(old, ignore_errors=True)
        return Path(tempfile.mkdtemp(prefix="audit-", dir=root))

    def size(self) -> int:
        return sum(_size(path) for path in self.root.rglob("*") if path.is_file())

    def trim(self, keep=()) -> None:
        """Delete the oldest files (never those in `keep`) until the folder is within its budget."""
        with self._lock:
            files = [(_mtime(p), _size(p), p) for p in self.root.rglob("*") if p.is_file()]
            total = sum(size for _, size, _ in files)
            for _, size, path in sorted(files, key=lambda f: f[0]):
                if total <= self.budget:
                    break
                if path in keep:
                    continue
                path.unlink(missing_ok=True)
                total -= size

    def close(self) -> None:
        if self.owned:
            shutil.rmtree(self.root, ignore_errors=True)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
