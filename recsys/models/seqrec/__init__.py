from recsys.models.seqrec.configuration_seqrec import SeqRecConfig
from recsys.models.seqrec.modeling_ctr import CONTEXT_SIZES, SeqRecForCTR
from recsys.models.seqrec.modeling_seqrec import SeqRecLoss, SeqRecModel, left_pad

__all__ = ["CONTEXT_SIZES", "SeqRecConfig", "SeqRecForCTR", "SeqRecLoss", "SeqRecModel", "left_pad"]
