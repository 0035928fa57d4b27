"""Figures, grouped by what they show; each function returns a figure and saves nothing.

Every figure names what it shows in its title (the run or dataset, the split, the
checkpoint, test-time augmentation), its axes carry units, and the same colours mean the
same thing everywhere: ``REAL`` for real (training or reference) patches, ``GENERATED`` for a
generator's, ``THEORY`` for the expectation from the input C_ℓ, ``GOAL`` for a goal line.
"""
REAL = "k"
REAL_BAND = "0.78"
GENERATED = "C3"
THEORY = "C0"
GOAL = "C2"
