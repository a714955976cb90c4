"""XLNet in plain PyTorch: config, body, task heads and weight conversion."""
from cxlnet.model.config import XLNetConfig
from cxlnet.model.heads import (
    XLNetClassificationOutput,
    XLNetForQuestionAnswering,
    XLNetForSequenceClassification,
    XLNetLMHeadModel,
    XLNetLMOutput,
    XLNetQAOutput,
)
from cxlnet.model.model import XLNet, XLNetOutput

__all__ = [
    "XLNet",
    "XLNetClassificationOutput",
    "XLNetConfig",
    "XLNetForQuestionAnswering",
    "XLNetForSequenceClassification",
    "XLNetLMHeadModel",
    "XLNetLMOutput",
    "XLNetOutput",
    "XLNetQAOutput",
]
