"""Markdown reports and their pictures: evaluation reports and indexes, charts, the cell
gallery and the inference options' sections."""
