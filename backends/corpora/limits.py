"""What an upload may be: the limits the loaders check before (and while) they parse, in one place.

The loaders (backends/corpora/loaders.py) refuse a file by cheap checks on its raw bytes or headers
before any parser runs: columns in a CSV's first line, cells estimated from lines × columns, the
decompressed size of a zip / .npz / parquet, an image's pixels read from its header. Every refusal
names the limit and the measured value. Reading a table stops after `max_parse_seconds` (checked
between stages and between chunks of a large CSV). Settings (backends/settings.py) override the
ones an operator tunes (columns, cells, image megapixels, seconds, memory): Settings(...) arguments or
LATENT_ATLAS_* environment variables:

    from backends.corpora.limits import UploadLimits
    load_path(p, max_bytes=..., limits=UploadLimits(max_columns=10_000))
    load_path(p, max_bytes=..., limits=settings.upload_limits)

Nothing here imports numpy or pandas: importing it is free.
"""
from __future__ import annotations

from dataclasses import dataclass

# The defaults (each overridable by Settings; see UploadLimits)
MAX_COLUMNS = 100_000  # columns of a table (CSV, TSV, parquet); the first line of a text table is counted
MAX_CELLS = 50_000_000  # rows × columns, estimated from the raw bytes before parsing (50M float64 = 400 MB)
MAX_PARSE_MEMORY = 2 * 1024**3  # estimated memory of a parsed table, in bytes
MAX_PARSE_SECONDS = 120.0  # reading one upload's tables stops with a message after this long
ARCHIVE_EXPANSION = 4  # a zip, .npz or parquet may decompress to at most this many times the upload limit
MAX_ARCHIVE_MEMBERS = 20_000  # files in a zip or folder
MAX_IMAGE_PIXELS = 40_000_000  # larger images in a zip / folder are skipped (read from the header only)
MAX_META_COLUMNS = 1_000  # metadata columns kept from a table (the rest are dropped, with a note)
CSV_CHUNK_CELLS = 4_000_000  # a large CSV is parsed in chunks of about this many cells (time checked between)


@dataclass(frozen=True)
class UploadLimits:
    """The limits one load call checks. `UploadLimits()` are the defaults above."""

    max_columns: int = MAX_COLUMNS
    max_cells: int = MAX_CELLS
    max_parse_memory: int = MAX_PARSE_MEMORY
    max_parse_seconds: float = MAX_PARSE_SECONDS
    archive_expansion: int = ARCHIVE_EXPANSION
    max_archive_members: int = MAX_ARCHIVE_MEMBERS
    max_image_pixels: int = MAX_IMAGE_PIXELS
    max_meta_columns: int = MAX_META_COLUMNS
    csv_chunk_cells: int = CSV_CHUNK_CELLS
    # bytes a corpus may take once served (backends/corpora/memory.py); None: 60% of the machine's memory.
    # Checked before reading where the size is known up front (an ingest's folder: its manifest)
    memory_budget: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_columns", "max_cells", "max_parse_memory", "archive_expansion", "max_archive_members",
                     "max_image_pixels", "max_meta_columns", "csv_chunk_cells"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"UploadLimits.{name} must be a whole number ≥ 1, but is {value!r}")
        if self.memory_budget is not None and (not isinstance(self.memory_budget, int) or self.memory_budget < 1):
            raise ValueError(f"UploadLimits.memory_budget must be None or a whole number ≥ 1, but is "
                             f"{self.memory_budget!r}")
        if not self.max_parse_seconds > 0:
            raise ValueError(f"UploadLimits.max_parse_seconds must be > 0, but is {self.max_parse_seconds!r}")


DEFAULT_LIMITS = UploadLimits()
