"""The released checkpoints of ASL, ML-Decoder and ML-GCN, loaded exactly with torch alone.

Each loader reads the official file (``weights_only=True``; the released wrapping or the bare state
dict of the official training scripts), infers the architecture from its tensors, builds the model
on the meta device and puts the file's tensors in it by reference, strictly: the result gives the
official code's logits (within 1e-5, tested against reference outputs of the official code).
"""

from mlattack.models.released.asl import load_asl_checkpoint, map_asl_state_dict
from mlattack.models.released.mldecoder import load_mldecoder_checkpoint, map_mldecoder_state_dict
from mlattack.models.released.mlgcn import load_mlgcn_checkpoint, map_mlgcn_state_dict
from mlattack.models.released.pickles import read_numpy_pickle

__all__ = [
    "load_asl_checkpoint",
    "load_mldecoder_checkpoint",
    "load_mlgcn_checkpoint",
    "map_asl_state_dict",
    "map_mldecoder_state_dict",
    "map_mlgcn_state_dict",
    "read_numpy_pickle",
]
