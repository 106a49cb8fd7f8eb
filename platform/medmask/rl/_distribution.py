"""The action distribution of the AHM policy: an ordered fixed-count draw of patch indices.

Source: AHM section IV-A (a fixed count, a share p of random patches, the rest chosen by the
policy), with the sampler's own probability model in place of independent Bernoullis:

- The action is the ordered index vector ``a = (i_0, ..., i_{k-1})``, ``k = floor(r * N)``:
  first the ``n_r = round(p * k)`` uniformly random picks R, then the policy's
  ``k_pi = k - n_r`` picks in draw order (``MultiDiscrete([N] * k)``; the environment turns it
  into the boolean mask). A boolean mask could carry neither the order nor which picks were
  random, and the probability of an unordered set is a sum over k! orders.
- The policy's part is a Plackett-Luce draw on the logits z (Gumbel-top-k,
  :func:`medmask.masking.ahm_draw`). Given R its log-prob is exact::

      log pi(a | s, R) = sum_{t = n_r}^{k-1} [ z_{i_t} - logsumexp_{j in S_t} z_j ]

  S_t = patches neither in R nor already picked (:func:`plackett_luce_log_prob`, a masked
  logsumexp that stays finite for p in {0, 1} and k = N). The random share is no policy
  action: it has no term in the log-prob, the importance ratios or the entropy. A common
  shift of all logits leaves every term unchanged, so it gets exactly zero gradient: no
  "mask everything" drift of the logits is possible.
- Per-pick quantities (what the learner uses, one step of the episode per pick):
  :meth:`PlackettLuceMask.pick_logp` [B, k_pi], :meth:`pick_probs` (pi_t(j) over S_t,
  [B, k_pi, N]) and :meth:`pick_entropy` [B, k_pi] (the entropy of each pick given the
  realised prefix; their sum is an unbiased estimate of the draw's entropy, chain rule).
- :meth:`to_deterministic` (inference without exploration) masks the top k logits, in
  decreasing order, no random share.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
from ray.rllib.core.distribution.distribution import Distribution

from medmask.masking import (
    ahm_draw,
    available_before,
    check_random_share,
    check_ratio,
    masked_log_softmax,
    num_masked,
    num_random,
    plackett_luce_log_prob,
)


class PlackettLuceMask(Distribution):
    """The ordered AHM draw on per-patch logits z [B, N]: samples int64 [B, k] indices.

    Configure it with :func:`mask_distribution` (class attributes ``mask_ratio``,
    ``random_share``, ``greedy``); RLlib builds instances with ``from_logits(logits)``.
    """

    mask_ratio: float = 0.75
    random_share: float = 0.3
    greedy: bool = False

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    @classmethod
    def from_logits(cls, logits: torch.Tensor, **kwargs: Any) -> PlackettLuceMask:
        return cls(logits)

    # -- sizes ---------------------------------------------------------------------------
    @property
    def num_patches(self) -> int:
        return int(self.logits.shape[-1])

    @property
    def count(self) -> int:
        """k = floor(r * N) picks per draw."""
        return num_masked(self.num_patches, self.mask_ratio)

    @property
    def num_random(self) -> int:
        """n_r = round(p * k) random picks (0 for the greedy variant)."""
        return 0 if self.greedy else num_random(self.count, self.random_share)

    # -- per-pick terms (the learner's) ---------------------------------------------------
    def pick_logp(self, actions: torch.Tensor) -> torch.Tensor:
        """log pi(i_t | S_t) of the policy picks t = n_r..k-1, [B, k_pi] (exact, finite)."""
        return plackett_luce_log_prob(self.logits, _indices(actions), self.num_random)

    def pick_log_probs(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log pi_t(j) [B, k_pi, N], 0 outside S_t; S_t bool [B, k_pi, N]) of the policy picks."""
        indices = _indices(actions)
        available = available_before(indices, self.num_patches)[:, self.num_random:]
        return masked_log_softmax(self.logits, available), available

    def pick_probs(self, actions: torch.Tensor) -> torch.Tensor:
        """pi_t(j) for every policy pick and patch, [B, k_pi, N] (0 outside S_t)."""
        log_probs, available = self.pick_log_probs(actions)
        return log_probs.exp() * available

    def pick_entropy(self, actions: torch.Tensor) -> torch.Tensor:
        """Entropy of each policy pick given the realised prefix, [B, k_pi]."""
        log_probs, available = self.pick_log_probs(actions)
        return -(log_probs.exp() * log_probs * available).sum(dim=-1)

    def pick_kl(self, other: PlackettLuceMask, actions: torch.Tensor) -> torch.Tensor:
        """KL(self_t || other_t) of each policy pick's distribution given the prefix, [B, k_pi]."""
        mine, available = self.pick_log_probs(actions)
        theirs, _ = other.pick_log_probs(actions)
        return (mine.exp() * (mine - theirs) * available).sum(dim=-1)

    # -- RLlib's Distribution API ---------------------------------------------------------
    def logp(self, value: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """log-prob of the policy's picks given the random ones, [B] (module docstring)."""
        return self.pick_logp(value).sum(dim=-1)

    def entropy(self) -> torch.Tensor:
        """Entropy of the first policy pick over all N patches, [B] (needs no action)."""
        log_probs = torch.log_softmax(self.logits, dim=-1)
        return -(log_probs.exp() * log_probs).sum(dim=-1)

    def kl(self, other: PlackettLuceMask) -> torch.Tensor:  # type: ignore[override]
        """KL of the first policy pick's distributions, [B]."""
        mine = torch.log_softmax(self.logits, dim=-1)
        theirs = torch.log_softmax(other.logits, dim=-1)
        return (mine.exp() * (mine - theirs)).sum(dim=-1)

    def sample(self, *, sample_shape: Any = None, **kwargs: Any) -> torch.Tensor:
        """One ordered draw per row, int64 [B, k] (random picks first), no gradient."""
        if sample_shape not in (None, (), torch.Size()):
            raise ValueError("PlackettLuceMask draws one mask per row; sample_shape is unsupported")
        logits = self.logits.detach()
        flat = logits.reshape(-1, logits.shape[-1])
        if self.greedy:  # the top k logits in decreasing order
            draw = torch.topk(flat, self.count, dim=1, largest=True, sorted=True).indices
        else:
            draw = ahm_draw(flat, self.count, self.random_share)
        return draw.reshape(*logits.shape[:-1], self.count)

    def rsample(self, *, sample_shape: Any = None, **kwargs: Any) -> torch.Tensor:
        raise NotImplementedError("a discrete patch draw has no reparameterized sample")

    def to_deterministic(self) -> PlackettLuceMask:
        """The greedy variant: the top floor(r * N) logits."""
        return mask_distribution(self.mask_ratio, self.random_share, greedy=True)(self.logits)

    @staticmethod
    def required_input_dim(space: gym.Space, **kwargs: Any) -> int:
        if not isinstance(space, gym.spaces.MultiDiscrete):
            raise ValueError(f"PlackettLuceMask needs a MultiDiscrete action space, got {space}")
        return int(space.nvec.reshape(-1)[0])


def _indices(actions: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(actions).long()


_CLASSES: dict[tuple[float, float, bool], type[PlackettLuceMask]] = {}


def mask_distribution(
    mask_ratio: float = 0.75, random_share: float = 0.3, *, greedy: bool = False
) -> type[PlackettLuceMask]:
    """The :class:`PlackettLuceMask` subclass with these sampler settings (cached).

    Args:
        mask_ratio: masked share r (floor(r * N) patches per draw), AHM default 0.75.
        random_share: p, the uniformly random share of the masked patches (AHM Table V).
        greedy: top-k of the logits instead of sampling (inference).
    """
    key = (check_ratio(mask_ratio), check_random_share(random_share), bool(greedy))
    if key not in _CLASSES:
        name = f"PlackettLuceMask_r{key[0]:g}_p{key[1]:g}{'_greedy' if greedy else ''}"
        _CLASSES[key] = type(
            name, (PlackettLuceMask,),
            {"mask_ratio": key[0], "random_share": key[1], "greedy": key[2],
             "__module__": __name__},
        )
    return _CLASSES[key]
