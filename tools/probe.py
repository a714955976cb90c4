"""Linear probes of frozen XLNet features: how much of a classification label each layer carries
before any fine-tuning.

    python tools/probe.py runs/pretrain/pretrain-demo --train train.tsv --eval heldout.tsv
    python tools/probe.py random:tiny --spiece runs/pretrain/vocab/spiece.model --train ... --eval ...

MODEL is what `model.pretrained` takes (a weights directory, a cxlnet run directory or checkpoint),
or `random:<name>` for conf/model/<name>.yaml at random initialisation (torch seed --seed). For the
word embeddings and the content stream after each layer it reads two features per example, the state
at <cls> and the mean over the example's own pieces (padding excluded), fits a logistic regression on
the --train file (features standardised by the train statistics, L2 penalty --l2, L-BFGS) and prints
its accuracy on the --eval file. Where a pre-trained model's probes stay below a random model's, the
pre-training has not learnt what this classifier reads, and fine-tuning starts behind (README
"The demo chain").
"""
from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F
from torch import Tensor

from cxlnet.classify.data import encode_examples, read_tsv
from cxlnet.errors import CxlnetError, one_line
from cxlnet.model import XLNetConfig, XLNetForSequenceClassification
from cxlnet.runs import resolve_pretrained
from cxlnet.text import Tokenizer


def load_model(model: str, spiece: str | None, seed: int) -> tuple[XLNetForSequenceClassification, Tokenizer]:
    torch.manual_seed(seed)
    if model.startswith("random:"):
        if spiece is None:
            raise CxlnetError(f"{model}: a random model needs --spiece (its vocab_size is the tokenizer's)")
        tokenizer = Tokenizer(spiece)
        config = XLNetConfig.named(model.removeprefix("random:"), vocab_size=tokenizer.vocab_size)
        net = XLNetForSequenceClassification(config)
    else:
        weights = resolve_pretrained(model)
        tokenizer = Tokenizer(spiece or weights / "spiece.model")
        net = XLNetForSequenceClassification.from_pretrained(weights)
        if net.config.vocab_size != tokenizer.vocab_size:
            raise CxlnetError(f"{model}: vocab_size {net.config.vocab_size} but the tokenizer has "
                              f"{tokenizer.vocab_size} pieces (give the pre-training run's --spiece)")
    return net.eval(), tokenizer


@torch.no_grad()
def layer_features(net: XLNetForSequenceClassification, tensors: tuple[Tensor, ...], batch_size: int = 64) -> Tensor:
    """(n_layer + 1, N, 2 * d_model): per layer (0 = the word embeddings), [state at <cls>; mean over real pieces]."""
    input_ids, token_type_ids, input_mask = tensors[:3]
    states: list[Tensor] = []  # each layer's content stream h, (B, L, D), filled by the hooks
    hooks = [layer.register_forward_hook(lambda _module, _inputs, out: states.append(out[0]))
             for layer in net.transformer.layer]
    batches = []
    try:
        for start in range(0, len(input_ids), batch_size):
            ids, seg, mask = (t[start:start + batch_size] for t in (input_ids, token_type_ids, input_mask))
            states.clear()
            net.transformer(ids, token_type_ids=seg, input_mask=mask)
            real = (1.0 - mask)[..., None]  # (B, L, 1); classification pads left and <cls> is last
            per_layer = [net.transformer.word_embedding(ids), *states]
            batches.append(torch.stack([torch.cat([h[:, -1], (h * real).sum(1) / real.sum(1)], -1)
                                        for h in per_layer]))
    finally:
        for hook in hooks:
            hook.remove()
    return torch.cat(batches, dim=1)


def probe_accuracy(train_x: Tensor, train_y: Tensor, eval_x: Tensor, eval_y: Tensor, num_labels: int,
                   l2: float) -> float:
    """Accuracy (%) on eval of an L2-penalised logistic regression fitted on train."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    a, b = (train_x - mean) / std, (eval_x - mean) / std
    weight = torch.zeros(a.shape[1], num_labels, requires_grad=True)
    bias = torch.zeros(num_labels, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(a @ weight + bias, train_y) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return 100.0 * ((b @ weight + bias).argmax(-1) == eval_y).float().mean().item()


def probe(model: str, train: str, eval_file: str, spiece: str | None = None, max_seq_length: int = 128,
          num_labels: int = 2, l2: float = 1e-3, seed: int = 0) -> list[tuple[str, float, float]]:
    """Per layer: (name, <cls> probe accuracy, mean probe accuracy)."""
    net, tokenizer = load_model(model, spiece, seed)
    splits = []
    for path in (train, eval_file):
        tensors = encode_examples(read_tsv(path, num_labels), tokenizer, max_seq_length).tensors
        splits.append((layer_features(net, tensors), tensors[3]))
    (train_x, train_y), (eval_x, eval_y) = splits
    d = net.config.d_model
    rows = []
    for layer in range(train_x.shape[0]):
        name = "embeddings" if layer == 0 else f"layer {layer}"
        cls_acc, mean_acc = (probe_accuracy(train_x[layer][:, cols], train_y, eval_x[layer][:, cols], eval_y,
                                            num_labels, l2) for cols in (slice(0, d), slice(d, 2 * d)))
        rows.append((name, cls_acc, mean_acc))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a model.pretrained path, or random:<conf/model name>")
    parser.add_argument("--train", required=True, help="label<TAB>text TSV the probes are fitted on")
    parser.add_argument("--eval", required=True, help="label<TAB>text TSV they are scored on")
    parser.add_argument("--spiece", help="the SentencePiece model (default: the one saved with the weights)")
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--num-labels", type=int, default=2)
    parser.add_argument("--l2", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0, help="torch seed of a random:<name> model")
    args = parser.parse_args(argv)
    try:
        rows = probe(args.model, args.train, args.eval, args.spiece, args.max_seq_length, args.num_labels, args.l2,
                     args.seed)
    except CxlnetError as err:
        print(f"probe: error: {one_line(err)}", file=sys.stderr)
        return 2
    print(f"{'features':12s} {'<cls>':>7s} {'mean':>7s}   (probe accuracy %, {args.eval})")
    for name, cls_acc, mean_acc in rows:
        print(f"{name:12s} {cls_acc:7.1f} {mean_acc:7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
