"""The ``gpuinfer`` command line: ``run`` one memory mode or ``compare`` all of them.

It sits on top of the public Python API (``gpuinfer.InferenceSession``) and nothing below the
session imports it.  Entry point: ``gpuinfer.cli.main.main`` (also ``python -m gpuinfer``).
"""
