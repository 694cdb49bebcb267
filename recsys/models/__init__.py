"""Model definitions (HF-style config + model per folder). No Ray and no I/O here."""

from recsys.models.seqrec import SeqRecConfig, SeqRecForCTR, SeqRecModel

__all__ = ["SeqRecConfig", "SeqRecForCTR", "SeqRecModel"]
