"""Reading the results: report, paired comparisons and the two-level bootstrap, the claims table, sweeps, plots, the A/B sheet."""
