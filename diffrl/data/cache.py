"""A table of rows generated chunk by chunk and saved as it grows (QGPO's support actions).

Generation that takes minutes to hours must survive a kill: the rows made so far are saved
atomically every so often (safetensors, with the fingerprint of what made them, the table's row
count and whether it is complete), and a restart continues from the last saved chunk. A cache
made by other weights or settings (another fingerprint) or for another number of rows is
ignored; a damaged one too (it is made again, never trusted).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from diffrl.fileio import atomic_write


class ChunkCache:
    """Rows (N, ...) made in chunks of `chunk` rows, cached at `path` (None: not cached)."""

    def __init__(self, path: Path | None, fingerprint: str, rows: int, chunk: int) -> None:
        self.path, self.fingerprint, self.rows, self.chunk = path, fingerprint, rows, chunk

    @property
    def num_chunks(self) -> int:
        return (self.rows + self.chunk - 1) // self.chunk

    def load(self, device: torch.device | str = "cpu") -> tuple[list[torch.Tensor], bool]:
        """(the chunks saved so far, whether the table is complete); ([], False) if none fit."""
        if self.path is None or not self.path.exists():
            return [], False
        try:
            with safe_open(str(self.path), framework="pt", device=str(device)) as fh:
                meta = fh.metadata() or {}
                if meta.get("fingerprint") != self.fingerprint or meta.get("rows") != str(
                    self.rows
                ):
                    return [], False
                table = fh.get_tensor("rows")
        except Exception:  # noqa: BLE001 - a damaged cache is made again, not trusted
            return [], False
        return list(table.split(self.chunk)), meta.get("complete") == "1"

    def save(self, chunks: list[torch.Tensor], complete: bool) -> None:
        """Write the chunks made so far, atomically (a kill leaves the previous save whole)."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        table = torch.cat(chunks).detach().cpu().contiguous()
        meta = {
            "fingerprint": self.fingerprint,
            "rows": str(self.rows),
            "complete": str(int(complete)),
        }
        atomic_write(self.path, lambda tmp: save_file({"rows": table}, str(tmp), metadata=meta))
