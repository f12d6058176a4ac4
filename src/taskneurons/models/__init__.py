from taskneurons.models.ffn import FFNMatrix, ffn_matrices, supported_model_types
from taskneurons.models.loading import load_model_and_tokenizer

__all__ = ["FFNMatrix", "ffn_matrices", "supported_model_types", "load_model_and_tokenizer"]
