"""Text-anchored micromotion: StyleCLIP latent optimisation over a ladder of prompts.

From one random face w0 (seeded z, truncated toward the average latent) each prompt of a template — "a
person with {} smile" over degrees "no", "10%", … "100%" — pulls its own copy of w0 in W+ with Adam:

    loss_k = (1 − cos(CLIP_image(G(w_k)), CLIP_text(prompt_k)))
             + l2_lambda · ‖w_k − w0‖²  +  id_lambda · (1 − cos(ArcFace(G(w_k)), ArcFace(G(w0))))

with StyleCLIP's cosine learning-rate ramp (`get_lr`). This is micromotion-styleGAN's
`StyleCLIP/optimization/text.py` rule (lr 0.1, 40 steps, λ_l2 0.008, λ_id 0.005, truncation 0.7), with two
differences that leave the maths unchanged: the prompts are optimised as one batch (Adam is per-element
and the batch loss is the sum of independent per-prompt losses, so a batch equals the per-prompt loop up
to float rounding), and the CLIP term is 1 − cos instead of 1 − logits/100, which is the same thing for
CLIP's trained logit scale of 100 and does not depend on a random model's scale. The image is
area-resampled to CLIP's input (StyleCLIP's nearest-×7 + avg-pool, done exactly and for any resolution)
and normalised with CLIP's mean/std (StyleCLIP feeds [-1, 1] unnormalised; we follow CLIP's contract by
default, `load_clip(normalize=False)` / `--clip-no-normalize` reproduces StyleCLIP).

Anchors for the decomposition are `TextAnchors.with_start()` = [w0, w_"no", …, w_"100%"], the order of
the official `get_text_latent` list.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from typing import Callable, Sequence

import torch

log = logging.getLogger(__name__)

DEFAULT_DEGREES = ("no", "10%", "20%", "30%", "40%", "50%", "60%", "70%", "80%", "90%", "100%")
PLACEHOLDERS = ("{degree}", "{}")


def format_prompts(template: str, degrees: Sequence[str] = DEFAULT_DEGREES) -> list[str]:
    """One prompt per degree: every `{degree}` (or, when the template has none, every `{}`) is replaced.

    The template is data: plain `str.replace`, no `str.format`/eval, so other braces stay as written.
    Raises ValueError when the template has no placeholder or the degrees are empty.
    """
    if not isinstance(template, str) or not template.strip():
        raise ValueError("text template is empty; give one with a placeholder, e.g. \"a person with {} smile\"")
    degrees = [str(d) for d in degrees]
    if not degrees:
        raise ValueError("no degrees given; pass e.g. --degrees no 50% 100%")
    for ph in PLACEHOLDERS:
        if ph in template:
            return [template.replace(ph, d) for d in degrees]
    raise ValueError(
        f"text template {template!r} has no placeholder; put {{}} or {{degree}} where the degree goes, "
        f"e.g. \"a person with {{}} smile\""
    )


def get_lr(t: float, initial_lr: float, rampdown: float = 0.25, rampup: float = 0.05) -> float:
    """StyleCLIP's learning-rate schedule at progress t ∈ [0, 1): linear ramp-up, cosine ramp-down."""
    ramp = min(1.0, (1.0 - t) / rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    ramp = ramp * min(1.0, t / rampup)
    return initial_lr * ramp


@dataclasses.dataclass
class TextAnchors:
    """Result of `anchor_text`.

    latents   [K, num_ws, w_dim] float32 (CPU): the optimised code of each prompt, in prompt order.
    losses    [steps, K] float32: total per-prompt loss at each step (before that step's update).
    clip_losses, id_losses [steps, K]: the CLIP and identity terms of it (identity zeros when skipped).
    prompts   the K prompts; degrees the K degree strings.
    w0        [num_ws, w_dim] float32: the start code (truncated random face).
    """

    latents: torch.Tensor
    losses: torch.Tensor
    clip_losses: torch.Tensor
    id_losses: torch.Tensor
    prompts: list[str]
    degrees: list[str]
    w0: torch.Tensor
    seed: int
    identity_used: bool

    def with_start(self) -> torch.Tensor:
        """[1 + K, num_ws, w_dim]: w0 followed by the anchors (the official anchor list)."""
        return torch.cat([self.w0[None], self.latents], dim=0)


def random_start(G, seed: int, truncation: float = 0.7) -> torch.Tensor:
    """w0 [1, num_ws, w_dim] on G's device/dtype: z ~ N(0, I) from a CPU generator seeded with `seed`,
    mapped and truncated toward G's average latent (`G.mapping(z, truncation)`)."""
    p = next(G.parameters())
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    z = torch.randn(1, G.z_dim, generator=gen).to(device=p.device, dtype=p.dtype)
    with torch.no_grad():
        w = G.mapping(z, truncation=truncation)
    if w.dim() == 2:
        w = w[:, None, :].repeat(1, G.num_ws, 1)
    assert w.shape == (1, G.num_ws, G.w_dim), f"G.mapping returned {tuple(w.shape)}"
    return w.detach()


def _optimise(G, clip, identity, w0, img0, text_feats, steps, lr, l2_lambda, id_lambda, tick):
    """Adam on W+ for a batch of prompts. Returns (w [B, num_ws, w_dim], losses/clip/id [steps, B])."""
    B = text_feats.shape[0]
    g_dtype = next(G.parameters()).dtype
    w0 = w0.float()  # optimise in float32 whatever G's dtype (fp16 Adam state would underflow)
    w = w0.repeat(B, 1, 1).clone().requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr)
    use_id = identity is not None and getattr(identity, "available", True) and id_lambda > 0
    totals, clips, ids = [], [], []
    for i in range(steps):
        opt.param_groups[0]["lr"] = get_lr(i / steps, lr)
        img = G(w.to(g_dtype))
        c_loss = 1 - (clip.encode_image(img).to(text_feats.device) * text_feats).sum(dim=-1)
        l2 = ((w - w0) ** 2).flatten(1).sum(dim=1).float()
        i_loss = identity(img, img0).float().to(c_loss.device) if use_id else torch.zeros_like(c_loss)
        per = c_loss + l2_lambda * l2.to(c_loss.device) + id_lambda * i_loss
        opt.zero_grad(set_to_none=True)
        per.sum().backward()
        opt.step()
        totals.append(per.detach().cpu())
        clips.append(c_loss.detach().cpu())
        ids.append(i_loss.detach().cpu())
        if tick is not None:
            tick(1)
    return w.detach().float(), torch.stack(totals), torch.stack(clips), torch.stack(ids)


def _chunk_size(batch: bool | int, count: int) -> int:
    """Prompts per optimisation batch: True → all, False → 1, an int n ≥ 1 → n."""
    if batch is True:
        return count
    if batch is False:
        return 1
    if int(batch) < 1:
        raise ValueError(f"batch must be True, False or a chunk size >= 1, got {batch}")
    return min(int(batch), count)


def _optimise_in_chunks(run, count: int, size: int) -> list:
    """run(indices) over consecutive chunks of `size` prompts; on CUDA out-of-memory the failed chunk is
    retried at half the size (down to 1). Chunks are independent, so the split does not change the result."""
    parts, start = [], 0
    while start < count:
        idx = list(range(start, min(start + size, count)))
        try:
            parts.append(run(idx))
        except torch.cuda.OutOfMemoryError:
            if size == 1:
                raise
            size = max(1, size // 2)
            log.warning("out of GPU memory optimising %d prompts at once; retrying %d at a time", len(idx), size)
            torch.cuda.empty_cache()
            continue
        start += len(idx)
    return parts


def anchor_text(
    G,                                              # Generator: G(ws) -> [N,3,R,R] in [-1,1]; mapping, num_ws, w_dim, z_dim.
    clip,                                           # directions.clip_loader.Clip.
    template: str,                                  # Prompt template with a {} / {degree} placeholder.
    degrees: Sequence[str] = DEFAULT_DEGREES,       # Degree words, weakest first.
    steps: int = 40,                                # Adam steps per prompt.
    lr: float = 0.1,                                # Peak learning rate of the cosine ramp.
    l2_lambda: float = 0.008,                       # Weight of ‖w − w0‖².
    id_lambda: float = 0.005,                       # Weight of the ArcFace identity term.
    truncation: float = 0.7,                        # Truncation psi of the random start face.
    seed: int = 0,                                  # Seed of the start face z.
    batch: bool | int = True,                       # True: all prompts in one batch; False: one at a time; n: chunks
                                                    # of n. CUDA out-of-memory halves the chunk and retries.
    identity=None,                                  # directions.identity.IdentityLoss, or None (term skipped).
    progress: Callable[[int], None] | None = None,  # Called with 1 after every optimisation step.
) -> TextAnchors:
    """Optimise one W+ code per prompt from a seeded random face; see the module docstring."""
    prompts = format_prompts(template, degrees)
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    w0 = random_start(G, seed, truncation)  # G's device and dtype
    with torch.no_grad():
        img0 = G(w0)
    text_feats = clip.encode_text(prompts).to(device=img0.device)
    use_id = identity is not None and getattr(identity, "available", True) and id_lambda > 0

    was_training = G.training
    G.eval()
    needs_grad = [q for q in G.parameters() if q.requires_grad]
    for q in needs_grad:
        q.requires_grad_(False)
    try:
        parts = _optimise_in_chunks(
            lambda idx: _optimise(G, clip, identity, w0, img0, text_feats[idx], int(steps), lr, l2_lambda,
                                  id_lambda, progress),
            len(prompts), _chunk_size(batch, len(prompts)))
    finally:
        for q in needs_grad:
            q.requires_grad_(True)
        G.train(was_training)

    latents = torch.cat([x[0] for x in parts]).float().cpu()
    assert latents.shape == (len(prompts), G.num_ws, G.w_dim), tuple(latents.shape)
    return TextAnchors(
        latents=latents,
        losses=torch.cat([x[1] for x in parts], dim=1),
        clip_losses=torch.cat([x[2] for x in parts], dim=1),
        id_losses=torch.cat([x[3] for x in parts], dim=1),
        prompts=prompts,
        degrees=[str(d) for d in degrees],
        w0=w0[0].float().cpu(),
        seed=int(seed),
        identity_used=bool(use_id),
    )
