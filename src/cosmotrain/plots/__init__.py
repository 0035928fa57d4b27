"""Figures, grouped by what they show; each function returns a figure and saves nothing."""
