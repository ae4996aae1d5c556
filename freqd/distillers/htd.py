"""HTD, Hierarchical Topology Distillation (Kang et al., KDD 2021).

Loss on a batch of B triples, over the unique users U and unique items I (positives ∪
negatives) of the batch:

    L = [ α·L_TD + (1 − α)·L_GA ] / B

* L_GA (group assignment): DE's loss with G groups as experts, Σ_{e∈U∪I} ‖t_e − D(s_e, t_e)‖²
  (separate user and item mixtures, Gumbel temperature annealed like DE's).
* L_TD (topology): each entity's group is z_e = argmax selector(t_e) (user and item groups are
  distinct). With cos_S, cos_T the cosine similarities in the student's and teacher's spaces,

      L_TD = Σ_{(e,e′): z_e = z_e′} m_{ee′} (cos_S(e, e′) − cos_T(e, e′))²
           + Σ_{g present} Σ_{e∈U∪I} (cos_S(P^S_g, s_e) − cos_T(P^T_g, t_e))²

  over ordered pairs, where P^S_g, P^T_g are the group means of the student and teacher rows,
  treated as constants (no gradient), as in the reference. m_{ee′} = [cos_T(e, e′) > 0] when
  ``htd_positive_pairs_only`` (the reference code's mask, which drops within-group pairs the
  teacher sees as dissimilar) and 1 otherwise. ``htd_group_topology: prototype`` replaces the
  second sum by Σ_{g,g′} (cos_S(P^S_g, P^S_g′) − cos_T(P^T_g, P^T_g′))² (reference choice
  "first"; with detached prototypes it carries no gradient, as in the reference).

Cost: the within-group term is computed as a masked |U|² plus |I|² similarity matrix (users and
items never share a group), O((|U|² + |I|²)·d) time and O(|U|² + |I|²) memory per step; the
prototype term is O(2G·(|U| + |I|)·d). The temperature follows the woriazzc/KDs schedule
(1 → 1e-10 over the run); the original release used a fixed τ = 0.1 (``htd_tau_start`` =
``htd_tau_end`` = 0.1).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor
from torch.nn import functional as F

from freqd.distillers.base import DistillerSettings, StepTables
from freqd.distillers.feature_kd import ExpertPairDistiller, GumbelExperts, check_annealing
from freqd.settings import Float, Int


class HTDSettings(DistillerSettings):
    """HTD's config keys (Gowalla's reference values as defaults; CiteULike-t uses α 0.9)."""

    htd_groups: Int = Field(30, ge=1, description="number G of groups per side (users, items)")
    htd_alpha: Float = Field(0.5, ge=0, le=1, description="weight α of the topology term; 1 − α weighs the "
                                                          "group assignment")
    htd_group_topology: Literal["entity", "prototype"] = Field(
        "entity", description="group-level term: prototype–entity or prototype–prototype similarities")
    htd_positive_pairs_only: bool = Field(
        True, description="within-group pairs only where the teacher's cosine is positive (the reference's mask)")
    htd_hidden: Int | None = Field(None, ge=1, description="the groups' MLP hidden width; unset: (d_S + d_T) // 2")
    htd_tau_start: Float = Field(1.0, gt=0, description="Gumbel-softmax temperature at epoch 0")
    htd_tau_end: Float = Field(1e-10, gt=0, description="Gumbel-softmax temperature after htd_anneal_epochs")
    htd_anneal_epochs: Int | None = Field(
        None, ge=1, description="epochs of the geometric temperature schedule; unset: the run's epochs")

    @model_validator(mode="after")
    def _anneals_down(self) -> HTDSettings:
        check_annealing("htd", self.htd_tau_start, self.htd_tau_end)
        return self


def _cosine(a: Tensor, b: Tensor) -> Tensor:
    return F.normalize(a, dim=1) @ F.normalize(b, dim=1).T


class HTD(ExpertPairDistiller):
    """Hierarchical topology distillation (see the module docstring)."""

    name = "HTD"
    settings_cls = HTDSettings
    log_prefix = "htd"

    def __init__(self, config, teacher, student, train_dataset) -> None:
        super().__init__(config, teacher, student, train_dataset)
        s = self.settings
        self.user_groups, self.item_groups = self._expert_pair(
            config, student, s.htd_groups, s.htd_hidden, s.htd_tau_start, s.htd_tau_end, s.htd_anneal_epochs)

    def expert_pair(self) -> tuple[GumbelExperts, GumbelExperts]:
        return self.user_groups, self.item_groups

    # -- the two terms on (student rows, teacher rows) ---------------------------------------------
    def group_assignment(self, s_u: Tensor, t_u: Tensor, s_i: Tensor, t_i: Tensor) -> Tensor:
        """L_GA: Σ ‖t − D(s, t)‖² over the given user and item rows."""
        return ((t_u - self.user_groups(s_u, t_u, self.tau)).pow(2).sum()
                + (t_i - self.item_groups(s_i, t_i, self.tau)).pow(2).sum())

    def _within_group(self, s: Tensor, t: Tensor, z: Tensor) -> Tensor:
        with torch.no_grad():
            t_cos = _cosine(t, t)
            mask = z.unsqueeze(1) == z.unsqueeze(0)
            if self.settings.htd_positive_pairs_only:
                mask &= t_cos > 0
        return ((_cosine(s, s) - t_cos).pow(2) * mask).sum()

    def topology(self, s_u: Tensor, t_u: Tensor, s_i: Tensor, t_i: Tensor) -> Tensor:
        """L_TD over the given user and item rows."""
        g = self.settings.htd_groups
        z = torch.cat([self.user_groups.assign(t_u), self.item_groups.assign(t_i) + g])
        s, t = torch.cat([s_u, s_i]), torch.cat([t_u, t_i])
        n_u = s_u.shape[0]
        entity = self._within_group(s_u, t_u, z[:n_u]) + self._within_group(s_i, t_i, z[n_u:])
        with torch.no_grad():
            counts = torch.bincount(z, minlength=2 * g)
            present = counts > 0
            size = counts[present].unsqueeze(1).to(s.dtype)
            p_s = s.new_zeros(2 * g, s.shape[1]).index_add_(0, z, s.detach())[present] / size
            p_t = t.new_zeros(2 * g, t.shape[1]).index_add_(0, z, t)[present] / size
        if self.settings.htd_group_topology == "entity":
            group = (_cosine(p_s, s) - _cosine(p_t, t)).pow(2).sum()
        else:
            group = (_cosine(p_s, p_s) - _cosine(p_t, p_t)).pow(2).sum()
        return entity + group

    def forward(self, interaction, tables: StepTables) -> Tensor:
        user = interaction[self.USER_ID]
        users = torch.unique(user)
        items = torch.unique(torch.cat([interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID].reshape(-1)]))
        s_users, s_items = tables.users, tables.items
        rows = (s_users.index_select(0, users), self.t_users.index_select(0, users),
                s_items.index_select(0, items), self.t_items.index_select(0, items))
        alpha = self.settings.htd_alpha
        return (alpha * self.topology(*rows) + (1.0 - alpha) * self.group_assignment(*rows)) / user.shape[0]
