"""Network definitions: ``classifier`` (galaxy CNN), ``dcgan`` (CMB generator/discriminator).

Models are plain ``tf.keras`` (Keras 2) models built from a config section; they know
nothing about ranks, files or training loops.
"""
