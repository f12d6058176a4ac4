"""Task-specific neurons: pools, attribution, selection, NeuronSet, deactivation, sparse fine-tuning."""
