"""Continual learning (PAPER.md §6-7): NCFT, W-NCFT and the baselines over task orders.

- ``metrics``: CL, BWT, FG retention (Eq. 5), average forgetting on an accuracy matrix
- ``orders``: order validation
- ``rows``: snapshots of neuron rows and the W-NCFT similarity-weighted rows (Eq. 10-12)
- ``features``: task vectors (mean last-layer features of the pre-trained model), identity inference
- ``lora``: peft LoRA helpers and O-LoRA's orthogonality loss
- ``methods``: one small class per method behind one interface
- ``loop``: the stage loop (fresh Trainer per stage, shared logger, per-stage checkpoints)
- ``heatmap``: the run's accuracy-matrix figure, redrawn after every stage

Entry point: ``python -m taskneurons.continual`` (``__main__``).
"""
