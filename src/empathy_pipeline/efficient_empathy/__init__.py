"""Efficient-Empathy: rate sensibility and rationality, split at T, merge the two experts Branch-Train-Mix style, train the routers."""
