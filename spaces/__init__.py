"""What can be built: `ArchConfig`, the attention registry, the Transformer trunk, FLOPs."""

from spaces.attention import ATTENTION, Attention
from spaces.config import SCHEMA_VERSION, ArchConfig
from spaces.model import Transformer, build_model

__all__ = ["ATTENTION", "SCHEMA_VERSION", "ArchConfig", "Attention", "Transformer", "build_model"]
