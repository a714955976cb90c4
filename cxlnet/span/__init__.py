"""Span-extraction reading comprehension data (CMRC 2018, DRCD): reading, features, decoding, metric."""
from cxlnet.span.decode import decode, oracle_results
from cxlnet.span.examples import ReadStats, SpanExample, read_examples
from cxlnet.span.features import (
    FeatureStats, SpanConfig, SpanFeatures, answer_token_span, convert_examples, convert_file, convert_index,
)

__all__ = [
    "ReadStats", "SpanExample", "read_examples", "FeatureStats", "SpanConfig", "SpanFeatures",
    "answer_token_span", "convert_examples", "convert_file", "convert_index", "decode", "oracle_results", "evaluate",
    "evaluate_files", "mixed_segmentation", "remove_punctuation",
]


def __getattr__(name):  # metric names load lazily so `python -m cxlnet.span.metric` runs without a warning
    if name in ("evaluate", "evaluate_files", "mixed_segmentation", "remove_punctuation"):
        from cxlnet.span import metric

        return getattr(metric, name)
    raise AttributeError(name)
