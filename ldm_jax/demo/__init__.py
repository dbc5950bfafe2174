"""The demo: train both stages on the built-in data (or a folder), sample, measure, report."""
