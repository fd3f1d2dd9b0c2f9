"""Shared vocabulary: config, types, prompt format, model loading, generation."""
