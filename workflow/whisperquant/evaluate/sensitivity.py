"""Layer sensitivity: the damage of quantising one Linear at a time, measured on calibration speech.

For a scheme and a model, every target Linear is quantised alone (the scheme's
``targets`` narrowed to that one module, everything else fp32) and the model is
run teacher-forced on the calibration batches: the encoder on each batch's
log-mel features, the decoder on the tokens fp32 itself decodes greedily for
that batch (the evaluation's prompt and rules, the calibration set's token limit at most).
(A decoder Linear leaves the encoder fp32, so its rows reuse fp32's encoder
output: the encoder pass, most of the cost, runs only for encoder Linears.)
Each layer's row says how far the quantised model's next-token distributions
move from fp32's over the decoded positions (up to and including end of text):

``kl``
    mean KL(p_fp32 || p_quantised) in nats: what a greedy decoder feels.
``sqnr_db``
    10 log10(|logits_fp32|^2 / |logits_fp32 - logits_quantised|^2): output
    signal-to-quantisation-noise of the logits.
``top1_pct``
    positions whose most likely token is still fp32's.

This is the per-layer probe of "which layers matter" (ZeroQ, HAWQ and
BAQ-style bit allocation rank layers by such a sensitivity); the table is the
input a mixed-precision allocator needs.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from ..quantize.calibration import CalibrationSet

COLUMNS = ("order", "module", "stack", "layer", "kind", "kl", "sqnr_db", "top1_pct", "seconds")


def _reference(model, calibration: CalibrationSet) -> list[dict]:
    """Per batch: features, the teacher-forcing decoder inputs, the mask of scored positions, fp32 logits."""
    import torch

    from .transcribe import generate_kwargs_for

    gc = model.generation_config
    prompt = [int(gc.decoder_start_token_id)]
    language = calibration.language
    gen = generate_kwargs_for(model, language, calibration.max_new_tokens)
    if "language" in gen:
        prompt += [int(gc.lang_to_id[f"<|{language}|>"]), int(gc.task_to_id["transcribe"])]
    prompt.append(int(gc.no_timestamps_token_id))
    eos = int(gc.eos_token_id)
    out = []
    with torch.no_grad():
        for feats in calibration:
            seqs = model.generate(feats, **gen)
            if not bool((seqs[:, 0] == prompt[0]).all()):  # generate returned the new tokens only
                seqs = torch.cat([torch.tensor([prompt] * seqs.shape[0]), seqs], dim=1)
            seqs = torch.cat([seqs, torch.full((seqs.shape[0], 1), eos)], dim=1)  # every row ends in eos
            p = len(prompt)
            first_eos = (seqs[:, p:] == eos).int().argmax(dim=1) + p  # index of each row's end of text
            pos = torch.arange(seqs.shape[1] - 1)
            # logits at position t predict token t + 1: scored from the last prompt token to end of text
            mask = (pos[None, :] >= p - 1) & (pos[None, :] < first_eos[:, None])
            ids = seqs[:, :-1]
            encoded = model.model.encoder(feats).last_hidden_state
            logits = model(encoder_outputs=(encoded,), decoder_input_ids=ids).logits
            out.append({"features": feats, "encoded": encoded, "ids": ids, "mask": mask,
                        "logits": logits[mask].float()})
    return out


def _damage(ref: torch.Tensor, q: torch.Tensor) -> tuple[float, float]:
    """(mean KL(p_ref || p_q) in nats, % of positions with the same most likely token) over the rows."""
    import torch

    logp_ref, logp_q = torch.log_softmax(ref, -1), torch.log_softmax(q, -1)
    kl = (logp_ref.exp() * (logp_ref - logp_q)).sum(-1).mean().item()
    top1 = 100.0 * (ref.argmax(-1) == q.argmax(-1)).float().mean().item()
    return kl, top1


def layer_sensitivity(model_dir: Path, library: str, params: dict, calibration: CalibrationSet,
                      progress: bool = True) -> tuple[list[dict], dict]:
    """One row per target Linear of ``params`` (model order; see the module docstring) and the run's facts."""
    import torch
    from tqdm import tqdm

    from ..quantize import get_backend
    from ..quantize.modules import linear_names, load_fp32

    backend = get_backend(library)
    t0 = time.perf_counter()
    fp32 = load_fp32(model_dir)
    ref = _reference(fp32, calibration)
    del fp32
    ref_s = time.perf_counter() - t0
    names, _ = linear_names(model_dir, params["targets"])
    rows = []
    dtype = backend.input_dtype(params, "cpu")
    rx = re.compile(r"^model\.(encoder|decoder)\.layers\.(\d+)\.(.+)$")
    for order, name in enumerate(tqdm(names, desc=f"sensitivity {library}", disable=not progress)):
        t1 = time.perf_counter()
        one = {**params, "targets": f"^{re.escape(name)}$"}
        model = backend.quantize(model_dir, one, calibration)
        kls, sq_num, sq_den, agree, n = [], 0.0, 0.0, 0.0, 0
        with torch.no_grad():
            for batch in ref:
                if name.startswith("model.decoder."):  # the encoder is fp32's: reuse its output
                    enc = batch["encoded"].to(dtype) if dtype is not None else batch["encoded"]
                    inputs = {"encoder_outputs": (enc,)}
                else:
                    inputs = {"input_features": batch["features"].to(dtype) if dtype is not None
                              else batch["features"]}
                q = model(**inputs, decoder_input_ids=batch["ids"]).logits[batch["mask"]].float()
                kl, top1 = _damage(batch["logits"], q)
                m = batch["logits"].shape[0]
                kls.append(kl * m)
                sq_num += batch["logits"].pow(2).sum().item()
                sq_den += (batch["logits"] - q).pow(2).sum().item()
                agree += top1 * m
                n += m
        del model
        m = rx.match(name)
        rows.append({"order": order, "module": name, "stack": m.group(1) if m else "other",
                     "layer": int(m.group(2)) if m else -1, "kind": m.group(3) if m else name,
                     "kl": sum(kls) / n, "sqnr_db": 10 * float(torch.log10(torch.tensor(sq_num / sq_den)))
                     if sq_den > 0 else float("inf"), "top1_pct": agree / n,
                     "seconds": round(time.perf_counter() - t1, 3)})
    facts = {"library": library, "params": params, "layers": len(rows), "batches": len(ref),
             "scored_positions": int(sum(int(b["mask"].sum()) for b in ref)), "reference_s": round(ref_s, 3),
             "total_s": round(time.perf_counter() - t0, 3), "max_new_tokens": calibration.max_new_tokens}
    return rows, facts
