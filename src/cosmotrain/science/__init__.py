"""Science code shared by data preparation, training monitors and validation.

``spectra``: flat-sky and full-sky angular power spectra, transfer functions, theory.
``stats``: one-point and morphological statistics (pixel PDF, KS, Minkowski functionals).

Pure NumPy (healpy only where a function says so); no TensorFlow, no MPI.
"""
