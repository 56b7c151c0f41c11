"""Document isolation for packed rows: flash-attention varlen, else flex_attention with a document BlockMask,
else an SDPA block-diagonal mask. Per-document position_ids alone do not isolate documents in transformers 5.x.
"""
from __future__ import annotations

import importlib.util
import logging

log = logging.getLogger("raypipe.train")

# attention path -> transformers attn_implementation
IMPLEMENTATIONS = {"flash_varlen": "flash_attention_2", "flex": "flex_attention", "sdpa_block": "sdpa",
                   "padded": "sdpa"}


def choose_attention(device_type: str, pack: bool, requested: str = "auto") -> str:
    """The attention path for this device: flex_attention has no backward on CPU, so CPU packs with SDPA."""
    if not pack:
        return "padded"
    if requested != "auto":
        if requested not in IMPLEMENTATIONS or requested == "padded":
            raise ValueError(f"unknown attention path {requested!r}: auto, flash_varlen, flex, sdpa_block")
        return requested
    if device_type == "cuda":
        return "flash_varlen" if importlib.util.find_spec("flash_attn") else "flex"
    return "sdpa_block"


def model_inputs(batch: dict, attention: str) -> dict:
    """Keyword arguments for the decoder: input_ids, position_ids and the mask that isolates documents."""
    import torch

    ids, pos, doc = batch["input_ids"], batch["position_ids"], batch["doc_ids"]
    if attention == "padded":
        return {"input_ids": ids, "position_ids": pos, "attention_mask": batch["attention_mask"]}
    if attention == "flash_varlen":
        # One flat row; transformers derives cu_seqlens from the restarting position_ids.
        return {"input_ids": ids.reshape(1, -1), "position_ids": pos.reshape(1, -1), "attention_mask": None}
    b, n = ids.shape
    if attention == "flex":
        from torch.nn.attention.flex_attention import create_block_mask

        def same_doc_causal(bi, h, q, kv):
            return (doc[bi, q] == doc[bi, kv]) & (q >= kv)

        mask = create_block_mask(same_doc_causal, b, None, n, n, device=ids.device)
        return {"input_ids": ids, "position_ids": pos, "attention_mask": mask}
    # Padding shares doc id -1, so a padding query still sees itself: no all-masked row, no NaN.
    causal = torch.ones(n, n, dtype=torch.bool, device=ids.device).tril()
    mask = (doc[:, :, None] == doc[:, None, :]) & causal
    return {"input_ids": ids, "position_ids": pos, "attention_mask": mask[:, None]}


def flatten_for(batch: dict, attention: str) -> dict:
    """Labels and per-token tensors laid out like model_inputs' input_ids."""
    if attention != "flash_varlen":
        return batch
    out = dict(batch)
    for k in ("input_ids", "labels", "position_ids", "doc_ids", "token_source", "attention_mask"):
        out[k] = batch[k].reshape(1, -1)
    return out
