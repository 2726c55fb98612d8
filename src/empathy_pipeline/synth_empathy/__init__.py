"""Synth-Empathy: generate synthetic dialogues, let the discriminator answer, keep the similar (quality) and the diverse (K-Center-Greedy), judge the data."""
