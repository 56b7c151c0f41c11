"""Sequence packing with document boundaries, and collation of packed or padded rows into tensors."""
from __future__ import annotations

from dataclasses import dataclass

from raypipe.train.render import IGNORE


@dataclass
class Doc:
    input_ids: list[int]
    labels: list[int]
    source: int = 0


def pack(docs: list[Doc], max_len: int) -> list[list[Doc]]:
    """First-fit decreasing into rows of at most max_len tokens; deterministic for a given input order."""
    order = sorted(range(len(docs)), key=lambda i: (-len(docs[i].input_ids), i))
    rows: list[list[Doc]] = []
    free: list[int] = []
    for i in order:
        n = len(docs[i].input_ids)
        for r, room in enumerate(free):
            if n <= room:
                rows[r].append(docs[i])
                free[r] -= n
                break
        else:
            rows.append([docs[i]])
            free.append(max_len - n)
    return rows


def row_record(docs: list[Doc]) -> dict:
    """One packed row as plain lists (what Ray Data carries to the workers)."""
    ids, labels = [], []
    for d in docs:
        ids.extend(d.input_ids)
        # A document's first token is never a target, so no loss crosses a document boundary.
        labels.extend([IGNORE] + list(d.labels[1:]))
    return {"input_ids": ids, "labels": labels, "doc_lens": [len(d.input_ids) for d in docs],
            "doc_sources": [d.source for d in docs]}


def collate(rows: list[dict], pad_id: int):
    """Tensors for a micro-batch: input_ids, labels, position_ids (restarting per document), doc_ids (-1 on
    padding), token_source (-1 where there is no target), attention_mask (1 on real tokens)."""
    import torch

    width = max(len(r["input_ids"]) for r in rows)
    b = len(rows)
    input_ids = torch.full((b, width), pad_id, dtype=torch.long)
    labels = torch.full((b, width), IGNORE, dtype=torch.long)
    position_ids = torch.zeros((b, width), dtype=torch.long)
    doc_ids = torch.full((b, width), -1, dtype=torch.long)
    token_source = torch.full((b, width), -1, dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        input_ids[i, :n] = torch.as_tensor(r["input_ids"], dtype=torch.long)
        labels[i, :n] = torch.as_tensor(r["labels"], dtype=torch.long)
        start = 0
        for d, (length, src) in enumerate(zip(r["doc_lens"], r["doc_sources"])):
            position_ids[i, start:start + length] = torch.arange(length)
            doc_ids[i, start:start + length] = d
            token_source[i, start:start + length] = src
            start += length
    token_source[labels == IGNORE] = -1
    return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids, "doc_ids": doc_ids,
            "token_source": token_source, "attention_mask": (doc_ids >= 0).long(),
            "doc_lens": [list(r["doc_lens"]) for r in rows]}
