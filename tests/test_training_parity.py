"""Training parity: cxlnet's real training steps (the Lightning modules under a Trainer) against the
original's update rule written out in `tests/xlnet_reference.py`, on identical batches and initial
weights (CPU, no mixed precision, dropout 0, tiny configs).

- Pre-training: `PretrainModule` vs transformers' `XLNetLMHeadModel` + AdamWeightDecayOptimizer
  (no bias correction, decay exclusions by variable name, warm-up + poly decay, clip 1.0), with
  memory (`mems`, TPUEstimator's reset every `iterations` steps), `bi_data` and two-stream inputs.
- Fine-tuning (classification, span): the Chinese-XLNet recipe (optimizer `tf_adam`,
  `clip_shards: 8`) vs tf.train.AdamOptimizer's ε-hat, CrossShardOptimizer's per-core clipping and
  layer decay on `layer_{l}/` only.

The test settings make every formula visible in the numbers: a clip value that clips some shards
and not others, ε of the size of √v, weight decay large enough that one wrong exclusion moves
parameters far beyond the tolerance.

Pre-training compares two *different* implementations (ours and transformers'), so it runs in
float64: in float32 their rounding differs by ~1e-7 per op, and Adam's element-wise normalisation
turns that into trajectories that part by ~1e-5 in loss within 60 steps (measured: 1.3e-5 at lr
5e-4, 9e-6 at lr 2e-4), which would hide a broken formula of the same size. In float64 they agree
to 4e-8 (the float32 rounding of our logged loss and of the saved weights compared), so the
tolerances below are tight. Fine-tuning uses one implementation on both sides
(the parity of the forward with transformers is tests/test_model_parity.py) and runs in float32.
"""
from __future__ import annotations

import copy

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

import xlnet_reference as ref
from cxlnet.confdir import CONF_DIR, conf_dir
from cxlnet.model import XLNetConfig, XLNetForQuestionAnswering, XLNetForSequenceClassification, XLNetLMHeadModel
from cxlnet.paths import sample_dir

transformers = pytest.importorskip("transformers")

LOSS_RTOL = 1e-5  # measured max: 4e-8 (pre-training, float64), 1.2e-7 (fine-tuning, float32)
PARAM_ATOL, PARAM_RTOL = 1e-6, 1e-5  # measured max |diff| 4e-8 / 1.2e-7 (weights move by 1e-2..1e-1)


def assert_params_close(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor], moved_from: dict):
    assert ours.keys() == theirs.keys()
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], atol=PARAM_ATOL, rtol=PARAM_RTOL, msg=lambda m: f"{name}: {m}")
    # the run must have trained every parameter, or "close" would prove nothing about its update
    still = [n for n in ours if torch.equal(ours[n], moved_from[n])]
    assert not still, f"never updated: {still}"


def quiet_trainer(**kwargs) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      limit_val_batches=0, **kwargs)


# ------------------------------------------------------------------------------------ pre-training
PRETRAIN_STEPS, WARMUP, RESET, PRETRAIN_LR, WEIGHT_DECAY = 60, 10, 25, 5e-4, 0.1
DATA = dict(shards=None, num_task=1, task=0, bsz=4, seq_len=32, reuse_len=16, perm_size=16, num_predict=6,
            mask_alpha=6, mask_beta=1, max_gram=5, bi_data=True, num_workers=0)
MEM_LEN = 24
FF_ACTIVATION = "gelu"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from cxlnet.pretrain.corpus import build_store
    from cxlnet.pretrain.vocab import train_vocab

    tmp = tmp_path_factory.mktemp("parity")
    docs = (sample_dir() / "corpus" / "zh-hans.txt").read_text(encoding="utf-8").split("\n\n")[:60]
    (tmp / "corpus.txt").write_text("\n\n".join(docs).strip("\n") + "\n", encoding="utf-8")
    # a 2000-piece vocabulary of its own keeps the LM head small (the test's cost is the softmax)
    train_vocab([tmp / "corpus.txt"], tmp / "sp", vocab_size=2000, character_coverage=0.98, num_threads=1)
    build_store([tmp / "corpus.txt"], tmp / "sp.model", tmp / "store", num_shards=1)
    return tmp / "store"


def test_pretraining_matches_transformers_and_adam_weight_decay(store, tmp_path):
    from cxlnet.pretrain.corpus import TokenStore
    from cxlnet.pretrain.module import PretrainModule

    torch.manual_seed(0)
    vocab = int(TokenStore(store).manifest["vocab_size"])
    cfg = XLNetConfig.named("tiny", vocab_size=vocab, dropout=0.0, dropatt=0.0, mem_len=MEM_LEN,
                            reuse_len=DATA["reuse_len"], bi_data=True, ff_activation=FF_ACTIVATION)
    model = XLNetLMHeadModel(cfg)
    model.save_pretrained(tmp_path / "init")
    hf = transformers.XLNetLMHeadModel.from_pretrained(tmp_path / "init").double()
    assert (hf.transformer.mem_len, hf.transformer.reuse_len, hf.transformer.bi_data) == (MEM_LEN, 16, True)
    encode = hf.transformer.relative_positional_encoding  # builds float32 sinusoids whatever the model dtype
    hf.transformer.relative_positional_encoding = lambda *a, **k: encode(*a, **k).double()
    hf.train()  # dropout is 0: train mode only switches HF's memory on (use_mems_train)

    opt_cfg = OmegaConf.merge(OmegaConf.load(conf_dir() / "optimizer" / "xlnet_adamw.yaml"),
                              {"optim": {"lr": PRETRAIN_LR, "weight_decay": WEIGHT_DECAY}, "warmup_steps": WARMUP})
    data_cfg = OmegaConf.create({**DATA, "store": str(store)})
    module = PretrainModule(model, opt_cfg, data_cfg, seed=0, mem_reset_every=RESET)
    before = {n: p.detach().clone() for n, p in hf.named_parameters()}
    quiet_trainer(max_steps=PRETRAIN_STEPS, gradient_clip_val=1.0, precision="64-true").fit(module)

    losses, clipped = reference_pretraining(hf, store, data_cfg, lr=PRETRAIN_LR, weight_decay=WEIGHT_DECAY, eps=float(opt_cfg.optim.eps),
                                            min_lr_ratio=float(opt_cfg.min_lr_ratio))
    assert clipped == PRETRAIN_STEPS  # a fresh LM's gradient norm stays above 1.0: every step is clipped
    ours = [module.losses[s] for s in range(PRETRAIN_STEPS)]
    assert ours == pytest.approx(losses, rel=LOSS_RTOL)
    assert losses[-1] < losses[0] - 0.5  # it learned something
    assert_params_close(hf_named(model, hf), {n: p.detach() for n, p in hf.named_parameters()}, before)


def reference_pretraining(hf, store, data_cfg, lr, weight_decay, eps, min_lr_ratio):
    """The original's pre-training loop on transformers' model: the same stream of batches (cxlnet's
    data pipeline, tested against the original's elsewhere), memory carried between steps and reset
    as TPUEstimator does, AdamWeightDecayOptimizer after clip_by_global_norm(1.0)."""
    from cxlnet.pretrain.module import SlicedStreamDataset, stream_kwargs

    c = hf.config
    batches = iter(SlicedStreamDataset(store, [0], **stream_kwargs(data_cfg, 1, 0)))
    names, params = zip(*hf.named_parameters())
    tf_names = [ref.tf_variable_name(n) for n in names]
    assert sum(not ref.do_use_weight_decay(n, weight_decay) for n in tf_names) >= 4 * c.n_layer  # LayerNorms, biases
    adam = ref.AdamWeightDecayReference(list(params), tf_names, weight_decay=weight_decay, eps=eps)
    zeros = [torch.zeros(MEM_LEN, DATA["bsz"], c.d_model, dtype=torch.float64) for _ in range(c.n_layer)]  # time-major
    mems, losses, clipped = zeros, [], 0
    for step in range(PRETRAIN_STEPS):
        b = {k: v.double() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in next(batches).items()}
        assert b["step"] == step
        if step % RESET == 0:
            mems = zeros  # TPUEstimator: each `iterations` host loop starts from train_cache_fn's zeros
        out = hf(b["input_ids"], token_type_ids=b["token_type_ids"], mems=mems, perm_mask=b["perm_mask"],
                 target_mapping=b["target_mapping"], use_mems=True)
        mems = out.mems
        ce = torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), b["target"].flatten(), reduction="none")
        mask = b["target_mask"].flatten()
        loss = (ce * mask).sum() / mask.sum()
        grads, norm = ref.clip_by_global_norm(list(torch.autograd.grad(loss, params)), 1.0)
        clipped += norm > 1.0
        adam.apply(grads, ref.learning_rate(step, lr, WARMUP, PRETRAIN_STEPS, min_lr_ratio))
        losses.append(loss.item())
    return losses, clipped


def hf_named(model, hf) -> dict[str, torch.Tensor]:
    """Our parameters under transformers' names (through a saved directory: the real conversion,
    which stores float32, well inside PARAM_RTOL)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        loaded = type(hf).from_pretrained(tmp)
    return {n: p.detach().double() for n, p in loaded.named_parameters()}


# ------------------------------------------------------------------------------------ fine-tuning
FT_STEPS, FT_WARMUP, BATCH, SHARDS, LAYER_DECAY, EPS, LR = 12, 3, 16, 8, 0.5, 1e-4, 3e-3
V, L = 60, 12


@pytest.fixture
def hydra_run():
    """`build_trainer` reads the run's HydraConfig (as under `cxlnet finetune`)."""
    yield lambda cfg: HydraConfig.instance().set_config(cfg)
    HydraConfig.instance().cfg = None


def finetune_cfg(task: str, shards: int):
    """The shipped Chinese-XLNet recipe for `task` (tf_adam, clip_shards 8, layer decay), with test
    sizes; shards=1 selects plain global clipping."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("finetune", return_hydra_config=True, overrides=[
            f"task={task}", "model=tiny", "hardware=cpu", "logger=none", "trainer.enable_progress_bar=false",
            f"task.batch_size={BATCH}", f"optimizer.optim.lr={LR}", f"optimizer.optim.eps={EPS}",
            f"optimizer.warmup_steps={FT_WARMUP}", f"optimizer.layer_decay={LAYER_DECAY}",
            *([] if shards == SHARDS else [f"optimizer.clip_shards={shards}"])])
    assert cfg.optimizer.name == "tf_adam" and cfg.optimizer.clip_shards == shards
    assert cfg.optimizer.layer_decay_mode == "grad"
    return cfg


def cls_setup():
    cfg = XLNetConfig.named("tiny", vocab_size=V, n_layer=3, dropout=0.0, summary_last_dropout=0.0)
    model = XLNetForSequenceClassification(cfg, num_labels=2)
    g = torch.Generator().manual_seed(1)
    n = FT_STEPS * BATCH
    input_mask = torch.zeros(n, L)
    input_mask[::3, :4] = 1.0  # left padding (1 = pad), as classification features
    ids = torch.randint(5, V, (n, L), generator=g)
    seg = torch.randint(0, 2, (n, L), generator=g)
    labels = torch.randint(0, 2, (n,), generator=g)
    rows = (ids, seg, input_mask, labels, torch.arange(n))

    def loss_of(m, r):
        return m(input_ids=r[0], token_type_ids=r[1], input_mask=r[2], labels=r[3]).loss

    from cxlnet.classify.module import ClassificationModule

    return model, rows, loss_of, lambda mdl, opt: ClassificationModule(mdl, opt)


def span_setup():
    model = XLNetForQuestionAnswering(XLNetConfig.named("tiny", vocab_size=V, n_layer=3, dropout=0.0))
    g = torch.Generator().manual_seed(2)
    n = FT_STEPS * BATCH
    ids = torch.randint(5, V, (n, L), generator=g)
    seg = (torch.arange(L) >= 4).long().expand(n, L).clone()
    input_mask = torch.zeros(n, L)
    input_mask[::4, -3:] = 1.0  # right padding, as QA features
    p_mask = seg.eq(0).float()
    start = torch.randint(4, L - 3, (n,), generator=g)
    end = (start + torch.randint(0, 3, (n,), generator=g)).clamp(max=L - 4)
    rows = (ids, seg, input_mask, p_mask, start, end)

    def loss_of(m, r):
        return m(input_ids=r[0], token_type_ids=r[1], input_mask=r[2], p_mask=r[3], start_positions=r[4],
                 end_positions=r[5]).loss

    from cxlnet.span.module import SpanModule

    return model, rows, loss_of, lambda mdl, opt: SpanModule(mdl, opt, data=None, task_cfg=None)


class MicroBatchLosses(pl.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]) * trainer.accumulate_grad_batches)  # Lightning hands back loss / A


@pytest.mark.parametrize("task,setup,shards", [("chnsenticorp", cls_setup, SHARDS), ("cmrc2018", span_setup, SHARDS),
                                               ("cmrc2018", span_setup, 1)])
def test_finetuning_matches_tf_adam(task, setup, shards, tmp_path, hydra_run):
    """8 shards: hfl's TPU runs (the presets' default); 1 shard: global clipping (clip_shards=1)."""
    from cxlnet.training import build_trainer

    cfg = finetune_cfg(task, shards)
    hydra_run(cfg)
    torch.manual_seed(0)
    model, rows, loss_of, make_module = setup()
    reference = copy.deepcopy(model)
    module = make_module(model, cfg.optimizer)
    frozen = set(module.unused_parameters)
    names = [n for n, _ in reference.named_parameters() if n not in frozen]
    params = [reference.get_parameter(n) for n in names]
    before = {n: p.detach().clone() for n, p in zip(names, params)}

    def shard_rows(step: int, k: int):
        lo = step * BATCH + k * (BATCH // shards)
        return tuple(t[lo: lo + BATCH // shards] for t in rows)

    # a clip value among the gradient norms at the start (the median shard's; for one shard, 0.8 of
    # its norm): some steps or shards clip, others not, so the clip's place shows
    start = [ref.clip_by_global_norm(list(torch.autograd.grad(loss_of(reference, shard_rows(0, k)) / shards, params)), 1.0)[1]
             for k in range(shards)]
    clip = sorted(start)[shards // 2] if shards > 1 else 0.8 * start[0]
    cfg.trainer.gradient_clip_val = clip

    trainer = build_trainer(cfg, tmp_path, group=None, max_steps=FT_STEPS, callbacks=[record := MicroBatchLosses()],
                            logger=False, enable_checkpointing=False)
    assert trainer.accumulate_grad_batches == shards  # one process: the 8 shards are 8 micro-batches
    micro = BATCH // shards
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*rows), batch_size=micro, shuffle=False)
    trainer.fit(module, train_dataloaders=loader)

    tf_names = [ref.tf_variable_name(n) for n in names]
    multipliers = ref.layer_decay_multipliers(tf_names, LAYER_DECAY)
    assert {m for m in multipliers} == {LAYER_DECAY ** 2, LAYER_DECAY, 1.0}
    assert all(m == 1.0 for n, m in zip(names, multipliers) if "seg_embed" in n)
    adam = ref.TFAdamReference(params, eps=EPS)
    losses, clipped, unclipped = [], 0, 0
    for step in range(FT_STEPS):
        shard_losses = [loss_of(reference, shard_rows(step, k)) for k in range(shards)]
        grads, norms = ref.cross_shard_gradients(shard_losses, params, clip, multipliers)
        clipped += sum(n > clip for n in norms)
        unclipped += sum(n <= clip for n in norms)
        adam.apply(grads, ref.learning_rate(step, LR, FT_WARMUP, FT_STEPS, 0.0))
        losses += [x.item() for x in shard_losses]

    assert clipped and (unclipped or shards == 1)  # 8 shards: some clip, some not
    assert record.losses == pytest.approx(losses, rel=LOSS_RTOL)
    ours = {n: module.model.get_parameter(n).detach() for n in names}
    assert_params_close(ours, {n: p.detach() for n, p in zip(names, params)}, before)


def test_tf_adam_is_torch_adam_with_eps_hat():
    """The formula beside the runs: TF's ε-hat is torch's Adam with ε/√(1-β2ᵗ) at every step t."""
    from cxlnet.optim import TFAdam

    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(50))
    b = torch.nn.Parameter(a.detach().clone())
    tf_adam, torch_adam = TFAdam([a], lr=1e-2, eps=1e-3), torch.optim.Adam([b], lr=1e-2)
    for t in range(1, 6):
        g = torch.randn(50) * 1e-3
        a.grad, b.grad = g.clone(), g.clone()
        torch_adam.param_groups[0]["eps"] = 1e-3 / (1 - 0.999 ** t) ** 0.5
        tf_adam.step()
        torch_adam.step()
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-6, atol=1e-8)


@pytest.mark.slow
def test_ddp_shards_equal_one_process(tmp_path):
    """Under DDP each process clips its own shards and one all-reduce sums them: 2 gloo processes x 4
    shards give the weights of 1 process x 8 shards (measured max |diff| 4e-9; with DDP's own averaging in place of the shard sum they differ)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).with_name("ddp_shards_run.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    for world in (1, 2):
        subprocess.run([sys.executable, str(script), str(world), str(tmp_path / f"{world}.pt")], env=env, check=True,
                       capture_output=True, timeout=600)
    one, two = (torch.load(tmp_path / f"{w}.pt") for w in (1, 2))
    for name in one:
        torch.testing.assert_close(two[name], one[name], atol=1e-7, rtol=1e-6)
