"""Registered later."""
