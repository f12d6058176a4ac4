"""Understanding task-specific neurons (paper §5): overlap of neuron sets, the controlled-overlap table
(the draws themselves are a training-time selector: ``neurons/controlled.py``), per-layer parameter
similarity and its correlation with out-of-domain performance, and the aggregation of the proportion
sweeps into the paper's tables and figures.

Pure functions over ``NeuronSet``s, stored sets, saved weights (streamed) and ``metrics.json`` files;
the entry point is ``python -m taskneurons.analyze <command> [hydra overrides]``.
"""
