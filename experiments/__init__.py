"""Thin entry points: training runs per dataset and inspection tools."""
