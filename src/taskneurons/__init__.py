"""taskneurons: find, switch off and fine-tune task-specific FFN neurons in causal LMs."""

from pathlib import Path

__version__ = "0.1.0"

# The Hydra configs ship inside the package (so a wheel carries them); the repository's top-level conf/
# is a symlink to this folder.
CONF_DIR = Path(__file__).resolve().parent / "conf"
# The repository root of a source checkout (editable install). From an installed wheel this points into
# site-packages' parent: code must not read package data through it (use CONF_DIR), only optional
# checkout-only things (git metadata, the Makefile).
PROJECT_ROOT = Path(__file__).resolve().parents[2]
