"""Fusion models for conversational speech emotion recognition.

``models.build(name, ...)`` makes a fresh model, ``models.load(path)`` is the one
checkpoint loader, ``models.save(...)`` writes one, and
:class:`models.StreamingClassifier` runs a model one utterance at a time.
"""

from models.base import ContextConfig, EmotionModel, ModelOutput, resolve_device
from models.batch import Batch, collate
from models.checkpoint import Checkpoint, CheckpointError, load, save
from models.pipeline import AudioPipeline, FeaturePipeline, FramePipeline, TextPipeline
from models.registry import MODEL_NAMES, build, lookup
from models.streaming import StreamingClassifier

__all__ = [
    "AudioPipeline",
    "Batch",
    "Checkpoint",
    "CheckpointError",
    "ContextConfig",
    "EmotionModel",
    "FeaturePipeline",
    "FramePipeline",
    "MODEL_NAMES",
    "ModelOutput",
    "StreamingClassifier",
    "TextPipeline",
    "build",
    "collate",
    "load",
    "lookup",
    "resolve_device",
    "save",
]
