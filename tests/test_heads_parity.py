"""The task heads against transformers' own, weight for weight, in train mode with dropout 0:
`XLNetForQuestionAnswering` (start and end distributions with and without the gold start,
the beam's top starts and ends, the loss) and `XLNetForSequenceClassification` (logits, loss).
Our weights are saved in Hugging Face format and loaded by transformers."""
from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from cxlnet.model import XLNetConfig, XLNetForQuestionAnswering, XLNetForSequenceClassification  # noqa: E402

V, B, L = 50, 3, 11
NO_DROPOUT = {"dropout": 0.0, "summary_last_dropout": 0.0}


def pair(ours_cls, tmp_path, hf_name, summary_type="last", **extra):
    torch.manual_seed(0)
    cfg = XLNetConfig.named("tiny", vocab_size=V, n_layer=2, start_n_top=4, end_n_top=3, summary_type=summary_type,
                            **NO_DROPOUT)
    ours = ours_cls(cfg, **extra)
    # a trained head is not at its init: move every weight so no term can hide behind a zero or a one
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ours.save_pretrained(tmp_path)
    hf, info = getattr(transformers, hf_name).from_pretrained(tmp_path, output_loading_info=True)
    missing = [k for k in info["missing_keys"] if not k.startswith("answer_class.")]  # SQuAD 2.0 head, unused
    assert not missing and not info["unexpected_keys"], info
    return ours.train(), hf.train()


def inputs(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    input_mask = torch.zeros(B, L)
    input_mask[0, -3:] = 1.0  # right padding, as in span features
    p_mask = input_mask.clone()
    p_mask[:, -4:] = 1.0  # e.g. question, <sep>, <cls>
    return {"input_ids": torch.randint(0, V, (B, L), generator=g),
            "token_type_ids": torch.randint(0, 2, (B, L), generator=g), "input_mask": input_mask}, p_mask


def test_qa_head_matches_transformers(tmp_path):
    ours, hf = pair(XLNetForQuestionAnswering, tmp_path, "XLNetForQuestionAnswering")
    x, p_mask = inputs()
    keep = p_mask == 0
    start, end = torch.tensor([0, 2, 5]), torch.tensor([1, 6, 5])

    # training: loss with gold start and end
    ours_train = ours(**x, p_mask=p_mask, start_positions=start, end_positions=end)
    hf_train = hf(**x, p_mask=p_mask, start_positions=start, end_positions=end)
    torch.testing.assert_close(ours_train.loss, hf_train.loss, rtol=1e-5, atol=1e-6)

    # the distributions themselves, from transformers' head modules on its own hidden states
    h = hf.transformer(**x).last_hidden_state
    hf_start = hf.start_logits(h, p_mask=p_mask).log_softmax(-1)
    hf_end = hf.end_logits(h, start_positions=start, p_mask=p_mask).log_softmax(-1)
    torch.testing.assert_close(ours_train.start_log_probs[keep], hf_start[keep], rtol=1e-5, atol=1e-5)
    # with the gold start only (no end): the end distribution teacher-forced on that start
    gold_start = ours(**x, p_mask=p_mask, start_positions=start)
    assert gold_start.loss is None
    torch.testing.assert_close(gold_start.end_log_probs[keep], hf_end[keep], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours_train.end_log_probs, gold_start.end_log_probs)

    # inference: top starts, and for each the top ends (TF layout k * end_n_top + j; transformers'
    # is j * start_n_top + k and holds probabilities, not log-probabilities)
    beam, hf_beam = ours(**x, p_mask=p_mask), hf(**x, p_mask=p_mask)
    k, j = 4, 3
    assert torch.equal(beam.start_top_index, hf_beam.start_top_index)
    torch.testing.assert_close(beam.start_top_log_probs.exp(), hf_beam.start_top_log_probs, rtol=1e-5, atol=1e-6)
    assert torch.equal(beam.end_top_index.view(B, k, j), hf_beam.end_top_index.view(B, j, k).transpose(1, 2))
    torch.testing.assert_close(beam.end_top_log_probs.view(B, k, j).exp(),
                               hf_beam.end_top_log_probs.view(B, j, k).transpose(1, 2), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("summary_type", ["last", "first", "mean"])
def test_classification_head_matches_transformers(tmp_path, summary_type):
    ours, hf = pair(XLNetForSequenceClassification, tmp_path, "XLNetForSequenceClassification", summary_type,
                    num_labels=3)
    assert hf.config.summary_type == summary_type  # read from our config.json
    x, _ = inputs(2)
    x["input_mask"] = x["input_mask"].flip(-1)  # left padding, as in classification features
    labels = torch.tensor([2, 0, 1])
    a, b = ours(**x, labels=labels), hf(**x, labels=labels)
    torch.testing.assert_close(a.logits, b.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a.loss, b.loss, rtol=1e-5, atol=1e-6)
    assert a.logits.std() > 1e-3  # not a degenerate constant output
