"""taskneurons: find, switch off and fine-tune task-specific FFN neurons in causal LMs.

The Python API (docs/api.md, docs/quickstart.md)::

    import taskneurons as tn
    model, tok = tn.load_model("tiny_llama")
    task = tn.make_task({"name": "sent", "kind": "classification", "prompt": "{input} Sentiment:",
                         "labels": ["positive", "negative"], "metric": "accuracy"})
    nset = tn.select(tn.score_neurons(model, tok, task, rows), proportion=0.1)
    with tn.deactivated(model, nset):
        print(tn.evaluate_task(model, tok, task, rows)["score"])

Names are imported on first use, so ``import taskneurons`` stays fast (no torch until needed).
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# The Hydra configs ship inside the package (so a wheel carries them); the repository's top-level conf/
# is a symlink to this folder.
CONF_DIR = Path(__file__).resolve().parent / "conf"
# Reference data read at run time (the paper's numbers, the artefact list); experiments/*.yaml link here.
EXPERIMENTS_DIR = Path(__file__).resolve().parent / "experiments"
# The repository root of a source checkout (editable install). From an installed wheel this points into
# site-packages' parent: code must not read package data through it (use CONF_DIR), only optional
# checkout-only things (git metadata, the Makefile).
PROJECT_ROOT = Path(__file__).resolve().parents[2]

# public name -> module that defines it
_EXPORTS = {
    **dict.fromkeys(
        ("NeuronScores", "attach_deltas", "deactivated", "deactivation_callback", "evaluate_task", "export_continual", "export_hf",
         "export_lape", "finetuning_callback", "import_lape", "load_model", "make_task", "model_name",
         "neuron_pools", "pools_for", "random_like", "score_neurons", "select", "to_examples"),
        "taskneurons.api",
    ),
    "NeuronConfig": "taskneurons.neurons.config",
    "NeuronSet": "taskneurons.neurons.neuronset",
    "NeuronDeltas": "taskneurons.neurons.sparse_finetune",
    "TaskSpec": "taskneurons.data.tasks",
    "Example": "taskneurons.data.examples",
    "ConfigError": "taskneurons.errors",
}
__all__ = ["CONF_DIR", "EXPERIMENTS_DIR", "__version__", *sorted(_EXPORTS)]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ imports lazily
    from taskneurons.api import (  # noqa: F401
        NeuronScores,
        attach_deltas,
        deactivated,
        deactivation_callback,
        evaluate_task,
        export_continual,
        export_hf,
        export_lape,
        finetuning_callback,
        import_lape,
        load_model,
        make_task,
        model_name,
        neuron_pools,
        pools_for,
        random_like,
        score_neurons,
        select,
        to_examples,
    )
    from taskneurons.data.examples import Example  # noqa: F401
    from taskneurons.data.tasks import TaskSpec  # noqa: F401
    from taskneurons.errors import ConfigError  # noqa: F401
    from taskneurons.neurons.config import NeuronConfig  # noqa: F401
    from taskneurons.neurons.neuronset import NeuronSet  # noqa: F401
    from taskneurons.neurons.sparse_finetune import NeuronDeltas  # noqa: F401


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'taskneurons' has no attribute '{name}'")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
