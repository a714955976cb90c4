"""XLNet pre-training data: vocabulary training, sharded token store, on-the-fly PLM batches."""
from cxlnet.pretrain.corpus import TokenStore, build_store
from cxlnet.pretrain.examples import PretrainConfig, PretrainDataset, PretrainStream
from cxlnet.pretrain.vocab import train_vocab

__all__ = ["train_vocab", "build_store", "TokenStore", "PretrainConfig", "PretrainStream", "PretrainDataset"]
