"""Training loops (``classifier``, ``gan``) and what they share (``common``, ``checkpoint``)."""
