"""The pre-training LightningModule: XLNet's two-stream permutation LM with Transformer-XL memory.

Loss (spec §3.9): cross entropy of the query stream's predictions at the `num_predict` target slots,
`Σ(ce · target_mask) / Σ target_mask` per micro-batch (= per TPU core in XLNet); with gradient
accumulation Lightning averages the micro-batch losses, as XLNet averages the cores' gradients.

Memory (§2.9, §3.8): one memory per **row slice**. The stream batch of `data.bsz` rows is built
with `num_core = devices × accumulation` (XLNet's per-core row layout: every slice holds its own
forward and backward halves for bi_data); device r, micro-batch j trains on slice r·A + j. Row i
of step s+1 continues the text of row i of step s, so each slice's memory is carried to the same
slice of the next step: zeros at the start (attended, not masked), detached, and restored from the
checkpoint on a resume. `mem_reset_every: N` restarts every memory from zeros at each step that is
a multiple of N, as TPUEstimator does in XLNet's train.py on TPU: its `iterations`-step host loop
(1000) starts from `train_cache_fn`'s zeros (tpu_estimator._train_on_tpu_system). Off by default.

Data position: optimizer step k trains on stream batch k (all its slices), so a run resumed at
global step k starts the stream at k (in micro-batches: k × accumulation). RNG states (torch,
CUDA, XLA, numpy, python; the same on every rank, all seeded alike), the memories of every rank
(gathered to rank 0, which writes the checkpoint) and what fixes the data stream (refused on
resume if it changed) are saved in every checkpoint and restored right before the first resumed
step, so a resumed run continues the loss curve of the uninterrupted one exactly (on CPU, in one
process or several).

Validation (`cxlnet.pretrain.monitor`): before the first update, every `monitor.every_n_steps`
optimizer steps and after the last, rank 0 scores the held-out batches (shards never trained on)
in eval mode: `val/loss` and the content-stream collapse signal `val/content_spread` (with a
warning when it falls below `monitor.collapse_threshold`), also appended to `val.tsv`. Eval mode
draws no random numbers, so validation leaves the training curve unchanged.
"""
from __future__ import annotations

import logging
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from cxlnet.pretrain.examples import PretrainStream
from cxlnet.training import TrainModule

log = logging.getLogger(__name__)

STATE_KEY = "cxlnet_pretrain"


def stream_kwargs(data_cfg: DictConfig, num_core: int, seed: int) -> dict:
    """PretrainStream arguments from the `data` config group."""
    return dict(
        num_task=int(data_cfg.num_task), task=int(data_cfg.task),
        shards=None if data_cfg.shards is None else [int(s) for s in data_cfg.shards],
        bsz=int(data_cfg.bsz), seq_len=int(data_cfg.seq_len), reuse_len=int(data_cfg.reuse_len),
        bi_data=bool(data_cfg.bi_data), num_core=int(num_core), mask_alpha=int(data_cfg.mask_alpha),
        mask_beta=int(data_cfg.mask_beta), max_gram=int(data_cfg.max_gram),
        num_predict=int(data_cfg.num_predict), perm_size=int(data_cfg.perm_size), seed=int(seed),
        include_input_q=False,
    )


class SlicedStreamDataset(torch.utils.data.IterableDataset):
    """Micro-batches `(step, slice)` for step = start_step, start_step+1, ... and the given slices of
    each stream batch, in that order. Use with `DataLoader(ds, batch_size=None)`.

    With W workers, worker w yields the items w, w+W, ... of that sequence (the DataLoader reads
    workers round-robin, so the order is unchanged); a worker builds each stream batch it needs once.
    """

    def __init__(self, store: str | Path, slices: list[int], start_step: int = 0, stop_step: int | None = None,
                 **kwargs):
        super().__init__()
        self.store, self.slices, self.kwargs = str(store), list(slices), kwargs
        self.start_step, self.stop_step = int(start_step), stop_step
        self.num_slices = int(kwargs["num_core"])
        self.rows = int(kwargs["bsz"]) // self.num_slices

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        w, W = (0, 1) if info is None else (info.id, info.num_workers)
        stream = PretrainStream(self.store, **self.kwargs)
        A = len(self.slices)
        cached_step, batch = None, None
        i = w
        while True:
            step = self.start_step + i // A
            if self.stop_step is not None and step >= self.stop_step:
                return
            if step != cached_step:
                try:
                    p, s = stream.locate(step)
                except IndexError:
                    return
                batch, cached_step = stream.make_batch(p, s), step
            j = self.slices[i % A]
            lo = j * self.rows
            item = {k: v[lo: lo + self.rows] for k, v in batch.items()}
            item["slice"] = j
            item["step"] = step
            yield item
            i += W


class PretrainModule(TrainModule):
    """`model`: an `XLNetLMHeadModel` whose config has mem_len / reuse_len / bi_data of the run."""

    def __init__(self, model, optimizer_cfg: DictConfig, data_cfg: DictConfig, seed: int = 0,
                 loss_log: str | Path | None = None, stop_after: int | None = None,
                 mem_reset_every: int | None = None, tokenizer: dict | None = None,
                 val_batches: list[dict] | None = None, monitor_cfg: DictConfig | None = None,
                 val_log: str | Path | None = None, recipe: dict | None = None):
        super().__init__(model, optimizer_cfg)
        self.recipe = recipe  # the training settings, saved in every checkpoint (a resume must match them)
        self.mem_reset_every = int(mem_reset_every) if mem_reset_every else None
        self.tokenizer = tokenizer  # source, sha256, vocab_size, spiece_model bytes: saved in every checkpoint
        # held-out batches (never trained on): validation PLM loss, and the first is the collapse probe
        self.val_batches = list(val_batches or [])
        self.val_every = int(monitor_cfg.every_n_steps) if monitor_cfg is not None else 0
        self.collapse_threshold = float(monitor_cfg.collapse_threshold) if monitor_cfg is not None else 0.0
        self.val_log = Path(val_log) if val_log else None
        self.flops_per_batch: int | None = None  # for Lightning's ThroughputMonitor (set by `cxlnet train`)
        self._spread0: float | None = None
        self._collapsed = False
        self.last_validation: dict[str, float] = {}
        self.data_cfg = data_cfg
        self.seed = int(seed)
        self.loss_log = Path(loss_log) if loss_log else None
        self.stop_after = None if stop_after is None else int(stop_after)
        self.mems: dict[int, list[torch.Tensor]] = {}   # slice -> per-layer memory [rows, mem_len, d]
        self.data_start = 0                              # stream step of the first batch to read
        self._pending_rng: dict | None = None
        self._step_loss = 0.0
        self._step_started: float | None = None
        self.losses: dict[int, float] = {}                # optimizer step -> mean micro-batch loss

    # ---------------------------------------------------------------- layout
    @property
    def accumulation(self) -> int:
        return int(self.trainer.accumulate_grad_batches) if self._trainer is not None else 1

    @property
    def world(self) -> tuple[int, int]:
        return (int(self.trainer.global_rank), int(self.trainer.world_size)) if self._trainer is not None else (0, 1)

    def num_slices(self) -> int:
        return self.accumulation * self.world[1]

    def my_slices(self) -> list[int]:
        rank, _ = self.world
        A = self.accumulation
        return list(range(rank * A, (rank + 1) * A))

    def train_dataloader(self):
        kwargs = stream_kwargs(self.data_cfg, self.num_slices(), self.seed)
        ds = SlicedStreamDataset(self.data_cfg.store, self.my_slices(), start_step=self.data_start, **kwargs)
        workers = int(self.data_cfg.num_workers)
        return torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers,
                                           persistent_workers=False, pin_memory=False)

    # ---------------------------------------------------------------- memory
    def _zero_mems(self, rows: int, device, dtype) -> list[torch.Tensor]:
        c = self.model.config
        return [torch.zeros(rows, c.mem_len, c.d_model, device=device, dtype=dtype) for _ in range(c.n_layer)]

    def _mems_for(self, j: int, rows: int, device) -> list[torch.Tensor] | None:
        if not self.model.config.mem_len:
            return None
        mems = self.mems.get(j)
        if mems is None:
            mems = self._zero_mems(rows, device, self.model.transformer.word_embedding.weight.dtype)
        return [m.to(device) for m in mems]

    # ---------------------------------------------------------------- training
    def training_step(self, batch, batch_idx):
        if self._pending_rng is not None:
            _set_rng_state(self._pending_rng)
            self._pending_rng = None
        j, step = int(batch["slice"]), int(batch["step"])
        if self.mem_reset_every and step % self.mem_reset_every == 0:
            self.mems.pop(j, None)  # TPUEstimator's new host loop: memory from zeros
        rows = batch["input_ids"].shape[0]
        if self.val_every and step == self.data_start and j == self.my_slices()[0] and self._spread0 is None:
            self.validate_now(step)  # before the first update: the baseline of the collapse signal
        if self._step_started is None:
            self._step_started = time.perf_counter()
        out = self.model(batch["input_ids"], token_type_ids=batch["token_type_ids"],
                         mems=self._mems_for(j, rows, batch["input_ids"].device),
                         perm_mask=batch["perm_mask"], target_mapping=batch["target_mapping"])
        if out.mems is not None:
            self.mems[j] = out.mems  # detached by the model (§3.8)
        loss = lm_loss(out.logits, batch["target"], batch["target_mask"])
        A = self.accumulation
        self._step_loss = self._step_loss + loss.detach().float() / A  # no host sync per micro-batch
        if j == self.my_slices()[-1]:
            self._finish_step(step, rows * A * self.world[1])
        return loss

    def _finish_step(self, step: int, samples: int) -> None:
        loss_t = self._step_loss
        if self.world[1] > 1:
            loss_t = self.trainer.strategy.reduce(loss_t, reduce_op="mean")
        loss = float(loss_t)  # one host sync per optimizer step (losses.tsv, the bar)
        self._step_loss = 0.0
        now = time.perf_counter()
        dt = max(now - (self._step_started or now), 1e-9)
        self._step_started = now
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        self.losses[step] = loss
        tokens = samples * int(self.data_cfg.seq_len)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False, sync_dist=False)
        self.log("train/lr", lr, prog_bar=True, on_step=True, on_epoch=False)
        self.log("train/tokens_per_s", tokens / dt, prog_bar=True, on_step=True, on_epoch=False)
        self.log("train/samples_per_s", samples / dt, prog_bar=False, on_step=True, on_epoch=False)
        last = step + 1 >= int(self.trainer.max_steps)
        if self.val_every and ((step + 1) % self.val_every == 0 or last):
            self.validate_now(step + 1)
        if self.stop_after is not None and step + 1 >= self.stop_after:
            self.trainer.should_stop = True  # a planned stop: like a kill after checkpointing
        if self.loss_log is not None and self.trainer.is_global_zero:
            with self.loss_log.open("a", encoding="utf-8") as fh:
                fh.write(f"{step}\t{loss:.8f}\t{lr:.8e}\n")

    def example_ids(self, batch) -> dict:
        """A micro-batch is rows of one stream batch: the step of the stream and the row slice."""
        return {"stream_step": int(batch["step"]), "slice": int(batch["slice"]),
                "rows": int(batch["input_ids"].shape[0])}

    def on_train_batch_end(self, outputs, batch, batch_idx):
        pass  # train/lr is logged once per optimizer step in _finish_step

    # ---------------------------------------------------------------- validation
    def validate_now(self, step: int) -> None:
        """Validation PLM loss on the held-out batches and the collapse signal, after `step`
        optimizer steps; rank 0 only (no collective op), in eval mode (no dropout, no RNG drawn)."""
        if not self.val_batches or not self.trainer.is_global_zero:
            return
        from cxlnet.pretrain.monitor import content_spread, validation_loss

        device = self.model.transformer.word_embedding.weight.device
        batches = [{k: v.to(device) for k, v in b.items()} for b in self.val_batches]
        was_training = self.model.training
        self.model.eval()
        try:
            val_loss = validation_loss(self.model, batches, lm_loss)
            spread = content_spread(self.model, batches[0])
        finally:
            self.model.train(was_training)
        if self._spread0 is None:
            self._spread0 = spread
        self.log("val/loss", val_loss, prog_bar=True, on_step=True, on_epoch=False, rank_zero_only=True)
        self.log("val/content_spread", spread, on_step=True, on_epoch=False, rank_zero_only=True)
        collapsed = spread < self.collapse_threshold
        if collapsed and not self._collapsed:
            log.warning("step %d: the content stream has collapsed: its states differ across positions by %.3f "
                        "(relative spread; %.3f at the start), below monitor.collapse_threshold %.3f. Fine-tuning "
                        "from these weights starts from near-identical token states: lower the learning rate, "
                        "lengthen the warm-up or pre-train on more text", step, spread, self._spread0,
                        self.collapse_threshold)
        self._collapsed = collapsed
        self.last_validation = {"val_loss": val_loss, "content_spread": spread}
        if self.val_log is not None:
            with self.val_log.open("a", encoding="utf-8") as fh:
                fh.write(f"{step}\t{val_loss:.8f}\t{spread:.6f}\n")

    def on_train_start(self) -> None:
        super().on_train_start()
        # a resumed run drops the log lines the checkpoint has not seen (validation rows are
        # written after their step, so the resumed step's own row is rewritten too)
        if not self.trainer.is_global_zero:
            return
        for path, upto in ((self.loss_log, self.trainer.global_step), (self.val_log, self.trainer.global_step)):
            if path is not None and path.exists():
                keep = [ln for ln in path.read_text(encoding="utf-8").splitlines()
                        if ln and int(ln.split("\t")[0]) < upto]
                path.write_text("".join(f"{ln}\n" for ln in keep), encoding="utf-8")

    # ---------------------------------------------------------------- checkpoints
    def _all_mems(self) -> dict[int, list[torch.Tensor]]:
        """The memories of every slice on every process, on the CPU. Lightning calls
        `on_save_checkpoint` on all ranks and writes rank 0's dict, so the ranks' memories are
        gathered first (all ranks step in lockstep: either all hold theirs or none does)."""
        mine = self.my_slices()
        if self.world[1] == 1 or not all(j in self.mems for j in mine):
            return {int(j): [m.detach().to("cpu") for m in mems] for j, mems in self.mems.items()}
        local = torch.stack([torch.stack(self.mems[j]) for j in mine])  # (A, n_layer, rows, M, d)
        every = self.all_gather(local).to("cpu")  # (W, A, n_layer, rows, M, d)
        A = len(mine)
        return {r * A + a: list(every[r, a].unbind(0)) for r in range(every.shape[0]) for a in range(A)}

    def data_identity(self) -> dict:
        return data_identity(self.data_cfg, self.num_slices(), self.seed)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[STATE_KEY] = {
            "data_step": int(self.trainer.global_step),   # next stream batch to train on
            "num_slices": self.num_slices(),
            "data": self.data_identity(),
            "mems": self._all_mems(),
            "rng": _get_rng_state(),
            "model_config": self.model.config.to_dict(),
            "tokenizer": self.tokenizer,
            "recipe": self.recipe,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get(STATE_KEY)
        if state is None:
            return
        check_resume(state, self.num_slices(), self.data_identity())
        self.data_start = int(state["data_step"])
        self.mems = {int(j): list(mems) for j, mems in state["mems"].items()}
        self._pending_rng = state["rng"]
        log.info("resuming at step %d (stream batch %d, %d memories)", checkpoint.get("global_step", -1),
                 self.data_start, len(self.mems))

    def on_train_epoch_start(self) -> None:
        self._step_started = None


def data_identity(data_cfg: DictConfig, num_slices: int, seed: int) -> dict:
    """What fixes the stream of batches: a resume with anything else here would continue at the
    right step index of a different stream."""
    from cxlnet.pretrain.corpus import TokenStore

    manifest = TokenStore(data_cfg.store).manifest
    stream = stream_kwargs(data_cfg, num_slices, seed)
    return {"stream": stream, "tokenizer_sha256": manifest["tokenizer"]["sha256"],
            "shard_tokens": [int(s["tokens"]) for s in manifest["shards"]]}


def check_resume(state: dict, num_slices: int, identity: dict) -> None:
    """Refuse to resume a checkpoint's `STATE_KEY` state with another row layout or other data
    (checked before the run starts, and again when Lightning restores the checkpoint)."""
    from cxlnet.errors import CxlnetError

    if int(state["num_slices"]) != num_slices:
        raise CxlnetError(
            f"the checkpoint was written with {state['num_slices']} row slices (devices x accumulation), "
            f"this run has {num_slices}: resume with the same layout so every memory meets its rows")
    saved, now = state.get("data"), identity
    if saved is not None and saved != now:
        diff = sorted(k for k in {**saved["stream"], **now["stream"]} if saved["stream"].get(k) != now["stream"].get(k))
        what = ", ".join(f"{k} {saved['stream'].get(k)!r} -> {now['stream'].get(k)!r}" for k in diff) or \
            "the token store (tokenizer or shards)"
        raise CxlnetError(f"the checkpoint was trained on other data ({what}): resume with the data settings "
                          f"and store it was written with, or start a new run_name")


def lm_loss(logits: torch.Tensor, target: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """Σ(ce · target_mask) / Σ target_mask over the [B, P] target slots (spec §3.9)."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # fp32 or wider, never bf16
    ce = F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none").view_as(target_mask)
    mask = target_mask.to(ce.dtype)
    return (ce * mask).sum() / mask.sum().clamp_min(1.0)


def _get_rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": _py_state_to_list(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if "torch_xla" in sys.modules:  # hardware=tpu: the device's own generator (dropout on the TPU)
        import torch_xla.core.xla_model as xm

        state["xla"] = int(xm.get_rng_state())
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(state["cuda"])
        except (RuntimeError, IndexError):
            log.warning("CUDA RNG state not restored (different device count)")
    if "xla" in state and "torch_xla" in sys.modules:
        import torch_xla.core.xla_model as xm

        xm.set_rng_state(state["xla"])


def _py_state_to_list(state):
    version, internal, gauss = state
    return [version, list(internal), gauss]
