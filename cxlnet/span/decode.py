"""N-best decoding of span predictions (XLNet `run_squad.write_predictions`, spec §5.10).

Runs on the CPU once per evaluation, from the static-shaped beam outputs of the QA head, one row
per feature (TF layout: end entry `k * end_n_top + j` belongs to start candidate `k`):
  start_top_log_probs [F, start_n_top], start_top_index [F, start_n_top],
  end_top_log_probs [F, start_n_top * end_n_top], end_top_index [F, start_n_top * end_n_top].
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from cxlnet.span.examples import SpanExample
from cxlnet.span.features import SpanFeatures

RESULT_KEYS = ("start_top_log_probs", "start_top_index", "end_top_log_probs", "end_top_index")


def _softmax(scores: list[float]) -> list[float]:
    if not scores:
        return []
    mx = max(scores)
    exps = [math.exp(s - mx) for s in scores]
    tot = sum(exps)
    return [x / tot for x in exps]


def decode(examples: Sequence[SpanExample], features: SpanFeatures, results: Mapping[str, Any],
           n_best_size: int = 5, max_answer_length: int = 40, start_n_top: int = 5, end_n_top: int = 5
           ) -> tuple[dict[str, str], dict[str, list[dict]]]:
    """Predictions {qid: text} and n-best lists {qid: [{text, probability, start_log_prob, end_log_prob}]}.

    `results` holds the four arrays in RESULT_KEYS with one row per feature, in feature order, or
    additionally `unique_ids` [F] to say which feature each row belongs to (any order, subset ok).
    Examples without any feature (e.g. MISMATCH paragraphs) get the empty answer "".
    `max_answer_length` counts SentencePiece tokens (40 for CMRC 2018, 30 for DRCD in hfl's runs).
    """
    arrays = {k: np.asarray(results[k]) for k in RESULT_KEYS}
    if "unique_ids" in results:
        pos = {int(u): i for i, u in enumerate(features.unique_ids)}
        rows = [pos[int(u)] for u in np.asarray(results["unique_ids"])]
    else:
        if len(arrays["start_top_index"]) != len(features):
            raise ValueError(f"{len(arrays['start_top_index'])} result rows for {len(features)} features")
        rows = list(range(len(features)))
    k_top = min(start_n_top, arrays["start_top_index"].shape[1])
    s_lp = arrays["start_top_log_probs"].astype(np.float64).tolist()
    s_ix = arrays["start_top_index"].astype(np.int64).tolist()
    e_lp = arrays["end_top_log_probs"].astype(np.float64).tolist()
    e_ix = arrays["end_top_index"].astype(np.int64).tolist()
    by_example: dict[int, list[int]] = {}
    for r, f in enumerate(rows):
        by_example.setdefault(int(features.example_index[f]), []).append(r)

    predictions: dict[str, str] = {}
    nbest_all: dict[str, list[dict]] = {}
    for e, ex in enumerate(examples):
        prelim = []  # (score, start_lp, end_lp, feature, s, e)
        for r in by_example.get(e, ()):
            f = rows[r]
            plen = int(features.paragraph_len[f])
            maxctx = features.token_is_max_context[f]
            for k in range(k_top):
                s = s_ix[r][k]
                for j in range(end_n_top):
                    jj = k * end_n_top + j
                    en = e_ix[r][jj]
                    # The original discards index paragraph_len - 1 too (off-by-one kept on
                    # purpose: the last paragraph token of a window can never be predicted).
                    if s >= plen - 1 or en >= plen - 1:
                        continue
                    if not maxctx[s]:  # max-context is checked on the start only
                        continue
                    if en < s or en - s + 1 > max_answer_length:
                        continue
                    prelim.append((s_lp[r][k] + e_lp[r][jj], s_lp[r][k], e_lp[r][jj], f, s, en))
        prelim.sort(key=lambda x: x[0], reverse=True)  # stable, like the original's sorted()
        seen: set[str] = set()
        nbest = []
        for score, slp, elp, f, s, en in prelim:
            if len(nbest) >= n_best_size:
                break
            a = int(features.tok_start_to_orig[f, s])
            b = int(features.tok_end_to_orig[f, en])
            text = ex.context[a : b + 1].strip()  # sliced from the RAW context
            if text in seen:
                continue
            seen.add(text)
            nbest.append({"text": text, "start_log_prob": slp, "end_log_prob": elp})
        if not nbest:
            nbest.append({"text": "", "start_log_prob": -1e6, "end_log_prob": -1e6})
        probs = _softmax([x["start_log_prob"] + x["end_log_prob"] for x in nbest])
        nbest_all[ex.qid] = [
            {"text": x["text"], "probability": p, "start_log_prob": x["start_log_prob"], "end_log_prob": x["end_log_prob"]}
            for x, p in zip(nbest, probs)
        ]
        predictions[ex.qid] = nbest[0]["text"]
    return predictions, nbest_all


def oracle_results(features: SpanFeatures, start_n_top: int = 5, end_n_top: int = 5) -> dict[str, np.ndarray]:
    """Head outputs of a perfect model: the top start/end are each feature's labels (log-prob 0);
    the other beam entries point at <cls> with very low scores. For round-trip checks."""
    F = len(features)
    cls = features.cls_index.astype(np.int64)
    s_ix = np.repeat(cls[:, None], start_n_top, 1)
    s_ix[:, 0] = features.start_positions
    s_lp = np.full((F, start_n_top), -30.0)
    s_lp[:, 0] = 0.0
    e_ix = np.repeat(cls[:, None], start_n_top * end_n_top, 1)
    e_ix[:, 0] = features.end_positions
    e_lp = np.full((F, start_n_top * end_n_top), -30.0)
    e_lp[:, 0] = 0.0
    return {"start_top_log_probs": s_lp, "start_top_index": s_ix, "end_top_log_probs": e_lp,
            "end_top_index": e_ix, "unique_ids": features.unique_ids}
