"""NeuronConfig: the options of task-neuron identification, as one typed object.

The same options are the Hydra group ``conf/neurons/task.yaml`` (``neurons.*`` on the command line) and
the argument of the Python API (``taskneurons.score_neurons``): :meth:`NeuronConfig.from_hydra` reads the
composed group, and a test checks that every field here is a key there with the same default, so the two
descriptions cannot drift apart. Validation is the entry points' own (``validate_neurons_config``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from omegaconf import OmegaConf

from taskneurons.errors import ConfigError
from taskneurons.neurons.identify import validate_neurons_config


@dataclass(frozen=True)
class NeuronConfig:
    """How task neurons are scored and selected (defaults: the paper's setting, ``conf/neurons/task.yaml``).

    - ``definition``: ``output_units`` (every output unit of every FFN matrix) or ``intermediate``
      (FFN hidden units, the down projection's input; LAPE's neurons).
    - ``proportion``: the fraction in (0, 1] kept by :func:`taskneurons.select`.
    - ``scope``: ``per_module`` (top fraction of each (layer, matrix)) or ``global`` (over all units).
    - ``reduction``: ``mean`` | ``sum`` | ``abs_sum`` of |gradient x activation| over tokens.
    - ``token_scope``: ``target`` (positions predicting target tokens) or ``all`` (every real token).
    - ``max_examples``: attribution examples (a seeded sample); ``None`` reads them all.
    - ``batch_size`` / ``micro_batch_size``: examples per attribution batch / per forward-backward slice
      (peak memory follows the micro-batch, scores do not).
    - ``seed``: which examples the sample takes.
    - ``matrices``: ``all`` | ``W1`` | ``W2`` (output_units only): which FFN matrices a set keeps.
    """

    definition: str = "output_units"
    proportion: float = 0.1
    scope: str = "per_module"
    reduction: str = "mean"
    token_scope: str = "target"
    max_examples: int | None = 256
    batch_size: int = 8
    micro_batch_size: int | None = 4
    seed: int = 1234
    matrices: str = "all"

    def problems(self) -> list[str]:
        """Every problem with these options, each naming the ``neurons.<key>`` and its choices."""
        # the entry points' check wants the keys of a whole neurons group; the others are fixed here
        group = OmegaConf.create({**asdict(self), "set": "task", "split": "train"})
        try:
            return validate_neurons_config(group)
        except (TypeError, ValueError) as e:  # e.g. batch_size="eight": int() fails inside the check
            return [f"NeuronConfig: {e}"]

    def check(self) -> NeuronConfig:
        """``self``, or one ConfigError listing every problem."""
        problems = self.problems()
        if problems:
            raise ConfigError(problems)
        return self

    def replace(self, **changes: Any) -> NeuronConfig:
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise ConfigError(f"unknown NeuronConfig option(s) {', '.join(unknown)}; "
                              f"known: {', '.join(f.name for f in fields(self))}")
        return replace(self, **changes)

    @classmethod
    def from_hydra(cls, group: Any) -> NeuronConfig:
        """From a composed ``neurons`` group (its other keys, e.g. ``store_dir``, belong to the entry points)."""
        values = OmegaConf.to_container(group, resolve=True) if OmegaConf.is_config(group) else dict(group)
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})
