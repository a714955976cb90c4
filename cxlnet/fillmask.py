"""Fill `<mask>` pieces with XLNet's permutation LM: a quick look at whether loaded weights are sane.

    cxlnet predict task=fillmask model.pretrained=hfl/chinese-xlnet-base predict.text="哈尔滨是<mask><mask>江省的省会"

XLNet has no [MASK] input the way BERT does: a masked piece is a *target* of the permutation LM.
Its content is hidden from every position (`perm_mask[:, :, j] = 1` for a masked j), and the query
stream predicts it from the position alone (`target_mapping` selects the target rows; the query
stream never sees its own content). The `<mask>` id placed in the content stream is therefore never
read by anything.

Two decoding orders (`task.order`):
* `left_to_right` (default): XLNet's own factorisation with the masked pieces last in the
  permutation, in text order. Masked piece k is predicted from the context and the pieces already
  filled before it (greedily, the most probable piece), then becomes visible content for the next.
  One forward pass per mask. Multi-piece answers come out consistent with each other, which is what
  the joint distribution p(x_m1, x_m2 | context) = p(x_m1 | context) p(x_m2 | context, x_m1) asks for.
* `joint`: every mask predicted at once from the unmasked context only (one forward pass). Each
  distribution is then the marginal given the context, so neighbouring masks may disagree (e.g. two
  halves of different words); useful to see the raw per-position distributions.

The input is laid out as in pre-training: `pieces <sep> <cls>` with segment ids 0 ... 0 0 2.
Special pieces (`<unk>`, `<cls>`, `<mask>`, ...) are never proposed as fillers.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from cxlnet.errors import CxlnetError
from cxlnet.text import CLS_ID, MASK_ID, SEP_ID, SPECIAL_PIECES, SPIECE_UNDERLINE, UNK_ID, Tokenizer

MASK = "<mask>"
ORDERS = ("left_to_right", "joint")


@dataclass
class MaskedInput:
    ids: list[int]  # the text's piece ids with MASK_ID at the masked positions
    masked: list[int]  # positions of the masks, in text order


def encode_masked(tokenizer: Tokenizer, text: str) -> MaskedInput:
    """Pieces of `text` with each `<mask>` as one masked piece. The text between masks is cut by
    the tokenizer; a part that continues a word (no space before it) loses the `▁` SentencePiece
    puts at the start of every encoded string, so the pieces are those of the unmasked sentence
    (exactly so for Chinese text, where `▁` stands alone before the first character)."""
    parts = text.split(MASK)
    if len(parts) == 1:
        raise CxlnetError(f"predict.text={text!r}: no {MASK} to fill (write one {MASK} per piece)")
    ids: list[int] = []
    masked: list[int] = []
    if not parts[0].strip() and tokenizer.piece_to_id(SPIECE_UNDERLINE) != UNK_ID:
        # A text that starts with a mask still starts with SentencePiece's word-start piece, as
        # its unmasked encoding does when that piece stands alone (as before Chinese characters).
        ids.append(tokenizer.piece_to_id(SPIECE_UNDERLINE))
    for k, part in enumerate(parts):
        if k:
            masked.append(len(ids))
            ids.append(MASK_ID)
        if not part.strip():
            continue
        pieces = tokenizer.pieces(part)
        if k and not part[0].isspace() and pieces[0].startswith(SPIECE_UNDERLINE):
            bare = pieces[0][1:]
            if not bare:
                pieces = pieces[1:]
            elif tokenizer.piece_to_id(bare) != UNK_ID:
                pieces = [bare, *pieces[1:]]
        ids += [tokenizer.piece_to_id(p) for p in pieces]
    return MaskedInput(ids, masked)


@torch.no_grad()
def _target_log_probs(model, ids: list[int], hidden: list[int], targets: list[int]) -> torch.Tensor:
    """log p(piece | visible content) at `targets` (P, V); `hidden` positions are seen by no one."""
    device = next(model.parameters()).device
    L = len(ids) + 2
    input_ids = torch.tensor([ids + [SEP_ID, CLS_ID]], device=device)  # (1, L)
    token_type_ids = torch.tensor([[0] * (L - 1) + [2]], device=device)
    perm_mask = torch.zeros(1, L, L, device=device)
    perm_mask[0, :, hidden] = 1.0  # nobody attends to a masked piece's content
    target_mapping = torch.zeros(1, len(targets), L, device=device)
    target_mapping[0, torch.arange(len(targets)), targets] = 1.0
    logits = model(input_ids, token_type_ids=token_type_ids, perm_mask=perm_mask,
                   target_mapping=target_mapping).logits[0].float()  # (P, V)
    logits[:, : len(SPECIAL_PIECES)] = float("-inf")  # fill with text pieces only
    return logits.log_softmax(-1)


def fill_masks(model, tokenizer: Tokenizer, text: str, order: str = "left_to_right", top_k: int = 5) -> dict:
    """{"text", "filled", "order", "masks": [{"position", "piece", "id", "prob", "top": [[piece, prob], ...]}]}."""
    if order not in ORDERS:
        raise CxlnetError(f"task.order={order!r}: expected one of {', '.join(ORDERS)}")
    if model.config.bi_data:
        raise CxlnetError("fill-mask runs one sequence: set model.config.bi_data=false")
    enc = encode_masked(tokenizer, text)
    ids = list(enc.ids)
    masks = []

    def describe(position: int, logp: torch.Tensor) -> dict:
        top = logp.exp().topk(top_k)
        best = int(top.indices[0])
        ids[position] = best
        return {"position": position, "piece": tokenizer.id_to_piece(best), "id": best,
                "prob": round(float(top.values[0]), 4),
                "top": [[tokenizer.id_to_piece(int(i)), round(float(p), 4)] for p, i in zip(top.values, top.indices)]}

    if order == "joint":
        logp = _target_log_probs(model, ids, enc.masked, enc.masked)
        masks = [describe(pos, row) for pos, row in zip(enc.masked, logp)]
    else:
        for k, pos in enumerate(enc.masked):
            logp = _target_log_probs(model, ids, enc.masked[k:], [pos])
            masks.append(describe(pos, logp[0]))
    filled = tokenizer.sp.decode_pieces([tokenizer.id_to_piece(i) for i in ids])
    return {"text": text, "filled": filled, "order": order, "masks": masks}


def render(results: list[dict]):
    """A rich table: one row per mask with the chosen piece, its probability and the runners-up."""
    from rich.table import Table

    table = Table(title="fill-mask (permutation LM)", title_justify="left")
    for column in ("id", "mask", "piece", "p", "top candidates"):
        table.add_column(column, overflow="fold")
    for result in results:
        for n, m in enumerate(result["masks"]):
            table.add_row(result["id"] if n == 0 else "", str(n), m["piece"], f"{m['prob']:.3f}",
                          "  ".join(f"{piece} {p:.3f}" for piece, p in m["top"]))
        table.add_row("", "", f"[bold]{result['filled']}[/bold]", "", f"({result['order']})", end_section=True)
    return table
