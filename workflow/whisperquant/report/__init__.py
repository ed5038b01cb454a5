"""Reporting: the summary table with statistics, Markdown, plots and the study comparison."""
