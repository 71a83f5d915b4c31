"""The yardstick inside other people's trainers (:mod:`alignlimits.integrations.trl`). It fits frontiers from
sample tables (:mod:`alignlimits.pipeline`), so it sits at the top of the layers, beside ``report`` and ``cli``."""
