"""Tests of the gpuinfer command line."""
