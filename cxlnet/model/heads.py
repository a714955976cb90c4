"""Task heads on top of the XLNet body: permutation-LM, sequence classification, span QA.

Parameter names follow Hugging Face (`transformer.*`, `lm_loss.bias`, `sequence_summary.summary.*`,
`logits_proj.*`, `start_logits.dense.*`, `end_logits.{dense_0,LayerNorm,dense_1}.*`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cxlnet.model.config import XLNetConfig
from cxlnet.model.model import XLNet, XLNetPreTrained


@dataclass
class XLNetLMOutput:
    logits: Tensor  # (B, L or P, V)
    loss: Tensor | None = None
    mems: list[Tensor] | None = None
    last_hidden_state: Tensor | None = None


@dataclass
class XLNetClassificationOutput:
    logits: Tensor  # (B, num_labels)
    loss: Tensor | None = None
    mems: list[Tensor] | None = None
    last_hidden_state: Tensor | None = None


@dataclass
class XLNetQAOutput:
    loss: Tensor | None = None  # training: (start_nll + end_nll) / 2
    start_log_probs: Tensor | None = None  # (B, L), always
    end_log_probs: Tensor | None = None  # (B, L), training (teacher-forced on the gold start)
    start_top_log_probs: Tensor | None = None  # (B, k)            inference
    start_top_index: Tensor | None = None  # (B, k)
    end_top_log_probs: Tensor | None = None  # (B, k * j), entry k_i * end_n_top + j_i (TF layout)
    end_top_index: Tensor | None = None  # (B, k * j)
    mems: list[Tensor] | None = None
    last_hidden_state: Tensor | None = None


class _Head(XLNetPreTrained):
    """A body under `self.transformer` plus head modules created by the subclass."""

    def __init__(self, config: XLNetConfig):
        super().__init__()
        self.config = config
        self.transformer = XLNet(config)

    def _body(self, input_ids, token_type_ids, attention_mask, mems, perm_mask, target_mapping, input_mask):
        return self.transformer(input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask,
                                mems=mems, perm_mask=perm_mask, target_mapping=target_mapping,
                                input_mask=input_mask)


class TiedLMHead(nn.Module):
    """Output projection tied to the input embedding; only the bias is a parameter of its own."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, x: Tensor, embedding: Tensor) -> Tensor:
        return F.linear(x, embedding, self.bias)


class XLNetLMHeadModel(_Head):
    hf_architecture = "XLNetLMHeadModel"

    def __init__(self, config: XLNetConfig):
        super().__init__(config)
        self.lm_loss = TiedLMHead(config.vocab_size)
        self.reset_parameters()

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, mems=None, perm_mask=None,
                target_mapping=None, input_mask=None, labels: Tensor | None = None) -> XLNetLMOutput:
        """labels (B, L or P), -100 = ignored; loss = mean cross-entropy over the kept labels."""
        out = self._body(input_ids, token_type_ids, attention_mask, mems, perm_mask, target_mapping, input_mask)
        logits = self.lm_loss(out.last_hidden_state, self.transformer.word_embedding.weight)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)
        return XLNetLMOutput(logits=logits, loss=loss, mems=out.mems, last_hidden_state=out.last_hidden_state)


class SequenceSummary(nn.Module):
    """tanh(Linear(pooled)) then dropout (no dropout before the projection), as `summarize_sequence`.

    summary_type "last" pools <cls> (last: classification pads left), "first" the first position,
    "mean" the average over every position, padding included (the original's `reduce_mean` and
    transformers' "mean" do not mask it).
    """

    def __init__(self, config: XLNetConfig):
        super().__init__()
        self.summary_type = config.summary_type
        self.summary = nn.Linear(config.d_model, config.d_model)
        self.last_dropout = nn.Dropout(config.summary_last_dropout)

    def forward(self, h: Tensor) -> Tensor:  # h (B, L, D) -> (B, D)
        if self.summary_type == "last":
            pooled = h[:, -1]
        elif self.summary_type == "first":
            pooled = h[:, 0]
        else:
            pooled = h.mean(1)
        return self.last_dropout(torch.tanh(self.summary(pooled)))


class XLNetForSequenceClassification(_Head):
    hf_architecture = "XLNetForSequenceClassification"

    def __init__(self, config: XLNetConfig, num_labels: int = 2):
        super().__init__(config)
        self.num_labels = num_labels
        self.sequence_summary = SequenceSummary(config)
        self.logits_proj = nn.Linear(config.d_model, num_labels)
        self.reset_parameters()

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, mems=None, perm_mask=None,
                target_mapping=None, input_mask=None, labels: Tensor | None = None) -> XLNetClassificationOutput:
        out = self._body(input_ids, token_type_ids, attention_mask, mems, perm_mask, target_mapping, input_mask)
        logits = self.logits_proj(self.sequence_summary(out.last_hidden_state))
        loss = None if labels is None else F.cross_entropy(logits.float(), labels)
        return XLNetClassificationOutput(logits=logits, loss=loss, mems=out.mems,
                                         last_hidden_state=out.last_hidden_state)


def _masked_log_softmax(logits: Tensor, p_mask: Tensor | None) -> Tensor:
    """log_softmax over the last axis with p_mask = 1 positions excluded (cannot be an answer)."""
    logits = logits.float()
    if p_mask is not None:
        logits = logits.masked_fill(p_mask.bool(), torch.finfo(logits.dtype).min)
    return logits.log_softmax(-1)


class StartLogits(nn.Module):
    def __init__(self, config: XLNetConfig):
        super().__init__()
        self.dense = nn.Linear(config.d_model, 1)

    def forward(self, h: Tensor) -> Tensor:
        return self.dense(h).squeeze(-1)  # (B, L)


class EndLogits(nn.Module):
    """Linear(LayerNorm(tanh(Linear([h_token; h_start])))) -> (..., L)."""

    def __init__(self, config: XLNetConfig):
        super().__init__()
        self.dense_0 = nn.Linear(2 * config.d_model, config.d_model)
        self.LayerNorm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.dense_1 = nn.Linear(config.d_model, 1)

    def forward(self, h: Tensor, h_start: Tensor) -> Tensor:
        """h (B, L, d); h_start (B, k, d) -> (B, k, L): one end distribution per start."""
        k, L = h_start.shape[1], h.shape[1]
        x = torch.cat([h.unsqueeze(1).expand(-1, k, -1, -1), h_start.unsqueeze(2).expand(-1, -1, L, -1)], -1)
        return self.dense_1(self.LayerNorm(torch.tanh(self.dense_0(x)))).squeeze(-1)


class XLNetForQuestionAnswering(_Head):
    """Chinese-XLNet span head (spec §5.8): no answer-class head, TF beam layout."""

    hf_architecture = "XLNetForQuestionAnswering"

    def __init__(self, config: XLNetConfig):
        super().__init__(config)
        self.start_logits = StartLogits(config)
        self.end_logits = EndLogits(config)
        self.reset_parameters()

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, mems=None, perm_mask=None,
                target_mapping=None, input_mask=None, p_mask: Tensor | None = None,
                start_positions: Tensor | None = None, end_positions: Tensor | None = None) -> XLNetQAOutput:
        """p_mask (B, L): 1 = cannot be an answer. With start/end_positions (B,) the end head is
        teacher-forced on the gold start and `loss` is returned; otherwise the beam outputs."""
        out = self._body(input_ids, token_type_ids, attention_mask, mems, perm_mask, target_mapping, input_mask)
        h = out.last_hidden_state  # (B, L, d)
        d = h.shape[-1]
        start_logp = _masked_log_softmax(self.start_logits(h), p_mask)  # (B, L)
        common = dict(start_log_probs=start_logp, mems=out.mems, last_hidden_state=h)

        if start_positions is not None:
            h_start = h.gather(1, start_positions.view(-1, 1, 1).expand(-1, 1, d))  # (B, 1, d)
            end_logp = _masked_log_softmax(self.end_logits(h, h_start).squeeze(1), p_mask)  # (B, L)
            loss = None
            if end_positions is not None:
                start_nll = -start_logp.gather(1, start_positions.view(-1, 1)).mean()
                end_nll = -end_logp.gather(1, end_positions.view(-1, 1)).mean()
                loss = (start_nll + end_nll) / 2
            return XLNetQAOutput(loss=loss, end_log_probs=end_logp, **common)

        # Inference beam: the top start_n_top starts, for each the top end_n_top ends (static shapes).
        n_start, n_end = self.config.start_n_top, self.config.end_n_top
        start_top_logp, start_top_index = start_logp.topk(n_start, dim=-1)  # (B, k)
        h_start = h.gather(1, start_top_index.unsqueeze(-1).expand(-1, -1, d))  # (B, k, d)
        end_logp = _masked_log_softmax(self.end_logits(h, h_start), None if p_mask is None else p_mask.unsqueeze(1))
        end_top_logp, end_top_index = end_logp.topk(n_end, dim=-1)  # (B, k, j)
        return XLNetQAOutput(
            start_top_log_probs=start_top_logp, start_top_index=start_top_index,
            end_top_log_probs=end_top_logp.flatten(1), end_top_index=end_top_index.flatten(1),  # k * n_end + j
            **common,
        )
