"""Token-level SFT loss of a causal LM on trajectories (no Ray here; the job runs this class in actors).

The sequence is exactly what SFT trains on (raypipe.train.render): the chat-templated problem, then the assistant
turn rendered from the canonical reasoning and final part, so one trace scores the same whatever markup it came
in; only the assistant turn's tokens are scored, as in SFT. Long sequences run in windows that carry the KV cache forward, so every token still sees
its whole prefix: the per-token losses equal one full forward pass, while the logits held at once are bounded
by the window. Each trajectory runs alone, so results cannot depend on how rows are batched.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from raypipe.core.lexicon import Lexicon, get_lexicon
from raypipe.train.render import (THINK_CLOSE, THINK_OPEN, AssistantFormat, ReasoningDropped, RenderedText, encode,
                                  render_text)

PROBE_VERSION = "loss-probe@2"  # @2: scores the rendered canonical parts, not the raw response
N_DECILES = 10
# Token-loss histogram bins (nats): 0, then log-spaced from 1e-5 to 30; larger losses land in the last bin.
LOSS_EDGES = np.concatenate([[0.0], np.logspace(-5, np.log10(30.0), 140)])


@dataclass
class TokenScores:
    loss: np.ndarray  # per scored response token, nats
    entropy: np.ndarray  # entropy of the model's next-token distribution at that token, nats
    offsets: np.ndarray  # (n, 2) character span of each scored token in rendered.completion
    n_response_tokens: int  # before truncation
    truncated: bool
    rendered: RenderedText | None = None  # the scored text; its thinking_span places the reasoning


def marker_spans(text: str, start: int, end: int, lexicon: Lexicon) -> list[tuple[int, int]]:
    """Character spans of the lexicon's branch markers inside text[start:end] (the reasoning)."""
    pat = re.compile(lexicon.pattern(), re.ASCII if lexicon.word_boundary else 0)
    return [m.span() for m in pat.finditer(text, start, end)]


def marker_token_mask(offsets: np.ndarray, spans: list[tuple[int, int]]) -> np.ndarray:
    """True for every token whose character span overlaps a marker span."""
    mask = np.zeros(len(offsets), dtype=bool)
    if not len(offsets):
        return mask
    starts, ends = offsets[:, 0], offsets[:, 1]
    for s, e in spans:
        mask |= (starts < e) & (ends > s)
    return mask


def decile_of(n_scored: int, n_total: int) -> np.ndarray:
    """Position decile (0..9) of each scored token within the whole response."""
    return np.minimum((np.arange(n_scored) * N_DECILES) // max(n_total, 1), N_DECILES - 1)


def summarize(scores: TokenScores, spans: list[tuple[int, int]], routine_threshold: float) -> dict:
    """Per-trajectory sums and means: sums make exact per-source aggregates (token-weighted) later."""
    loss, ent = scores.loss.astype(np.float64), scores.entropy.astype(np.float64)
    n = len(loss)
    scored_end = int(scores.offsets[:, 1].max()) if n else 0
    spans = [sp for sp in spans if sp[0] < scored_end]  # markers a truncated sequence never reached
    marker = marker_token_mask(scores.offsets, spans)
    routine = loss < routine_threshold
    dec = decile_of(n, scores.n_response_tokens)
    hist = np.histogram(np.clip(loss, 0.0, LOSS_EDGES[-1]), bins=LOSS_EDGES)[0]
    return {
        "n_tokens": n,
        "n_response_tokens": scores.n_response_tokens,
        "truncated": scores.truncated,
        "mean_loss": float(loss.mean()) if n else None,
        "routine_share": float(routine.mean()) if n else None,
        "key_token_loss": float(loss[~routine].mean()) if (~routine).any() else None,
        "mean_entropy": float(ent.mean()) if n else None,
        "sum_loss": float(loss.sum()),
        "sum_entropy": float(ent.sum()),
        "n_routine": int(routine.sum()),
        "sum_loss_key": float(loss[~routine].sum()),
        "n_marker_tokens": int(marker.sum()),
        "n_markers": len(spans),
        "sum_loss_marker": float(loss[marker].sum()),
        "sum_entropy_marker": float(ent[marker].sum()),
        "decile_count": np.bincount(dec, minlength=N_DECILES).astype(np.int64).tolist(),
        "decile_sum_loss": np.bincount(dec, weights=loss, minlength=N_DECILES).tolist(),
        "decile_sum_entropy": np.bincount(dec, weights=ent, minlength=N_DECILES).tolist(),
        "loss_hist": hist.astype(np.int64).tolist(),
    }


class LossProbe:
    """Loads a causal LM once (setup) and scores trajectories one at a time."""

    def __init__(self, model: str, window: int = 1024, max_tokens: int | None = None,
                 routine_threshold: float = 0.05, lexicon: str = "paper", device: str | None = None,
                 dtype: str = "auto", keep_token_losses: bool = False, template: str = "auto",
                 think_open: str = THINK_OPEN, think_close: str = THINK_CLOSE, prompt_version: str = "v1-raw"):
        self.model_name, self.window, self.max_tokens = model, window, max_tokens
        self.routine_threshold, self.lexicon = routine_threshold, get_lexicon(lexicon)
        self.device, self.dtype, self.keep_token_losses = device, dtype, keep_token_losses
        self.template, self.fmt = template, AssistantFormat(think_open, think_close, prompt_version)
        self.model = self.tokenizer = None

    def setup(self) -> "LossProbe":
        import torch
        from transformers import AutoModelForCausalLM

        from raypipe.tiny import load_tokenizer, resolve_model

        path = resolve_model(self.model_name)
        self.device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = {"auto": torch.bfloat16 if self.device.startswith("cuda") else torch.float32,
                 "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[self.dtype]
        self.tokenizer = load_tokenizer(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(self.device).eval()
        limit = getattr(self.model.config, "max_position_embeddings", None)
        self.max_tokens = min(x for x in (self.max_tokens, limit) if x) if (self.max_tokens or limit) else None
        self.render("What is 1+1?", "Let me add 1 and 1.", "\\boxed{2}")  # fail early: a template that drops reasoning
        return self

    def render(self, problem: str, thinking: str | None, final: str | None) -> RenderedText:
        """The prompt and assistant turn SFT trains on (raypipe.train.render, the same settings)."""
        return render_text(self.tokenizer, problem, thinking, final, self.template, self.fmt)

    def encode(self, rendered: RenderedText) -> tuple[list[int], list[int], np.ndarray]:
        """(prompt ids, assistant-turn ids, their character offsets in rendered.completion): SFT's tokens."""
        p_ids, c_ids, offsets = encode(self.tokenizer, rendered, self.template, offsets=True)
        return p_ids, c_ids, np.asarray(offsets, dtype=np.int64).reshape(-1, 2)

    def token_losses(self, ids: list[int], first_scored: int, window: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Loss and entropy of ids[first_scored:] given everything before, in windows sharing one KV cache."""
        import torch
        from transformers import DynamicCache

        window = window or self.window
        x = torch.tensor([ids], device=self.device)
        losses, entropies = [], []
        cache = DynamicCache()
        with torch.inference_mode():
            for s in range(0, len(ids) - 1, window):
                e = min(s + window, len(ids) - 1)  # positions s..e-1 predict tokens s+1..e
                out = self.model(input_ids=x[:, s:e], cache=cache, use_cache=True)  # extends `cache` in place
                lo = max(s, first_scored - 1)  # first position whose target is a scored token
                if lo >= e:
                    continue
                logits = out.logits[0, lo - s:].float()
                logp = torch.log_softmax(logits, dim=-1)
                losses.append(-logp.gather(1, x[0, lo + 1:e + 1, None]).squeeze(1))
                entropies.append(-(logp.exp() * logp).sum(-1))
        if not losses:
            return np.zeros(0, np.float32), np.zeros(0, np.float32)
        return torch.cat(losses).cpu().numpy(), torch.cat(entropies).cpu().numpy()

    def score(self, problem: str, thinking: str | None, final: str | None, window: int | None = None) -> TokenScores:
        rendered = self.render(problem, thinking, final)
        p_ids, r_ids, offsets = self.encode(rendered)
        ids = p_ids + r_ids
        truncated = bool(self.max_tokens and len(ids) > self.max_tokens)
        if truncated:
            ids = ids[: self.max_tokens]
        n_scored = max(0, len(ids) - len(p_ids))
        if len(p_ids) == 0:  # nothing predicts the first token: it is not scored
            n_scored -= 1
            offsets = offsets[1:]
        loss, ent = self.token_losses(ids, max(len(p_ids), 1), window) if n_scored > 0 else (np.zeros(0), np.zeros(0))
        return TokenScores(loss, ent, offsets[:n_scored], len(r_ids), truncated, rendered)

    def measure(self, row: dict) -> dict:
        """One trajectory's row of the per-trajectory output; a row that cannot be scored carries `error`."""
        out = {"id": row["id"], "source": row["source"], "problem_id": row["problem_id"],
               "branch_ratio": row.get("branch_ratio"), "error": None}
        thinking, final = row.get("thinking"), row.get("final")
        if not ((thinking or "").strip() or (final or "").strip()):
            return {**out, "error": "empty response"}
        try:
            scores = self.score(row.get("problem") or "", thinking, final)
        except ReasoningDropped:
            raise  # the template, not the row: never score trajectories without their reasoning
        except Exception as e:  # one bad row never stops the job
            return {**out, "error": f"{type(e).__name__}: {str(e)[:300]}"}
        if not len(scores.loss):
            return {**out, "error": "no response token within --max-tokens"}
        span = scores.rendered.thinking_span
        spans = marker_spans(scores.rendered.completion, *span, self.lexicon) if span else []
        out.update(summarize(scores, spans, self.routine_threshold))
        if self.keep_token_losses:
            out["token_loss"] = scores.loss.astype(np.float32).tolist()
        return out
