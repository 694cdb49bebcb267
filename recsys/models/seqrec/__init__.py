from recsys.models.seqrec.configuration_seqrec import SeqRecConfig
from recsys.models.seqrec.modeling_seqrec import SeqRecModel, left_pad

__all__ = ["SeqRecConfig", "SeqRecModel", "left_pad"]
