"""One module per quantisation library; the file name is the library name in the config.

Modules here are imported lazily by :mod:`whisperquant.quantize.registry` and
import their library (and torch) only inside the methods that run it.
"""
