"""Sample tables (DESIGN §2): read into memory (:mod:`~alignlimits.samples.tables`) or in passes
(:mod:`~alignlimits.samples.streaming`)."""

from alignlimits.samples.streaming import NotStreamable, StreamedTable, stream_samples
from alignlimits.samples.tables import SampleTable, default_reward_column, read_samples, read_table, validate

__all__ = ["NotStreamable", "SampleTable", "StreamedTable", "default_reward_column", "read_samples", "read_table",
           "stream_samples", "validate"]
