"""alignlimits: how much reward can KL-regularised alignment buy, and how close do real methods come."""

__version__ = "0.1.0"
