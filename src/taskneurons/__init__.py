"""taskneurons: find, switch off and fine-tune task-specific FFN neurons in causal LMs."""

from pathlib import Path

__version__ = "0.1.0"

# The repository root (editable install): conf/ and outputs/ live here.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = PROJECT_ROOT / "conf"
