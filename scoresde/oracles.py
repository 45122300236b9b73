"""Data distributions whose diffused score and density are known in closed form.

For data x_0 ~ sum_k w_k N(mu_k, Sigma_k) and any SDE here, x_t | x_0 ~ N(alpha x_0, std^2 I),
so the marginal at time t is again a mixture:

    p_t(x) = sum_k w_k N(x; alpha mu_k, alpha^2 Sigma_k + std^2 I),
    grad log p_t(x) = sum_k r_k(x) C_k^{-1} (alpha mu_k - x),   r_k = posterior responsibility.

A single Gaussian is the one-component case. With per-component class labels the mixture
also gives the exact class-conditional p_t(x | c) (the components labelled c, their
weights renormalized), its score, and the exact class posterior p_t(c | x) (the
classifier that makes classifier guidance exact); ``GaussianData.condition`` gives the
exact p(x_unknown | x_known) that inpainting should sample. These are the truth the tests compare
samplers and likelihoods against; use them to check your own solvers too:

    oracle = GaussianMixture(weights, means, covs, sde=sde)
    res = scoresde.sample(oracle.score, sde, (n, D), ...)
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor

from ._validation import TimeLike, as_real_tensor, check_instance, check_int, check_state
from .sdes import SDE


class GaussianMixture:
    """A Gaussian mixture sum_k w_k N(mu_k, Sigma_k) in D dimensions, and its diffused marginals.

    Args:
        weights: [K] non-negative, summing to 1.
        means: [K, D].
        covs: [K, D, D] symmetric positive definite.
        sde: the forward SDE defining the marginals at t > 0 (needed for ``score`` and
            ``log_prob(x, t)``; set later with ``with_sde``).
        labels: optional [K] integer class labels of the components, every class in
            0..n_classes-1 used at least once. Then ``score(x, t, cond)`` and
            ``log_prob(x, t, cond)`` are those of p_t(x | c) (a label of -1, the null label,
            gives the unconditional ones), ``class_logits(x, t)`` is log p_t(c | x) and
            ``conditional(c)`` the mixture p(x | c).

    Parameters are stored in float64 and cast to the dtype/device of each input.
    """

    def __init__(self, weights, means, covs, sde: Optional[SDE] = None, labels=None):
        w = as_real_tensor("weights", weights)
        mu = as_real_tensor("means", means)
        cov = as_real_tensor("covs", covs)
        if w.dim() != 1:
            raise ValueError(f"weights must be 1-D [K], got shape {tuple(w.shape)}")
        K = w.shape[0]
        if mu.dim() != 2 or mu.shape[0] != K:
            raise ValueError(f"means must have shape [K, D] = [{K}, D], got {tuple(mu.shape)}")
        D = mu.shape[1]
        if cov.shape != (K, D, D):
            raise ValueError(f"covs must have shape [K, D, D] = [{K}, {D}, {D}], got "
                             f"{tuple(cov.shape)}")
        if (w < 0).any() or not torch.isfinite(w).all():
            raise ValueError(f"weights must be finite and non-negative, got {w.tolist()}")
        if abs(w.sum().item() - 1.0) > 1e-8:
            raise ValueError(f"weights must sum to 1, got sum {w.sum().item():.10g}")
        if not torch.allclose(cov, cov.transpose(-1, -2), atol=1e-12, rtol=1e-10):
            raise ValueError("covs must be symmetric")
        chol, info = torch.linalg.cholesky_ex(cov)
        if (info != 0).any():
            k = int((info != 0).nonzero()[0])
            raise ValueError(f"covs[{k}] is not positive definite (eigenvalues "
                             f"{torch.linalg.eigvalsh(cov[k]).tolist()})")
        check_instance("sde", sde, (SDE, type(None)), "a scoresde SDE (VPSDE, VESDE, ...) or None")
        self.weights, self.means, self.covs, self._chol = w, mu, cov, chol
        self.sde = sde
        self.labels = None if labels is None else _check_labels(labels, K)

    @property
    def n_classes(self) -> int:
        """Number of classes (max label + 1); needs ``labels``."""
        return int(self._need_labels().max()) + 1

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def mean(self) -> Tensor:
        """Overall mean sum_k w_k mu_k, [D]."""
        return self.weights @ self.means

    @property
    def covariance(self) -> Tensor:
        """Overall covariance sum_k w_k (Sigma_k + mu_k mu_k^T) - mean mean^T, [D, D]."""
        second = torch.einsum("k,kij->ij", self.weights, self.covs
                              + self.means[:, :, None] * self.means[:, None, :])
        m = self.mean
        return second - m[:, None] * m[None, :]

    def with_sde(self, sde: SDE) -> "GaussianMixture":
        """The same data distribution, diffused by ``sde``."""
        return type(self)._rebuild(self, sde)

    @staticmethod
    def _rebuild(obj: "GaussianMixture", sde: Optional[SDE]) -> "GaussianMixture":
        return GaussianMixture(obj.weights, obj.means, obj.covs, sde=sde, labels=obj.labels)

    def conditional(self, c: int) -> "GaussianMixture":
        """The data distribution of class c, p(x | c): the components labelled c with their
        weights renormalized (same SDE)."""
        labels = self._need_labels()
        c = check_int("c", c, minimum=0)
        if c >= self.n_classes:
            raise ValueError(f"c must be a class label in [0, {self.n_classes}), got {c}")
        keep = labels == c
        w = self.weights[keep]
        return GaussianMixture(w / w.sum(), self.means[keep], self.covs[keep], sde=self.sde)

    def _need_labels(self) -> Tensor:
        if self.labels is None:
            raise ValueError("this mixture has no class labels: pass labels= (one integer "
                             "per component) to the constructor")
        return self.labels

    def marginal(self, t: float) -> "GaussianMixture":
        """The marginal p_t as a mixture: means alpha mu_k, covs alpha^2 Sigma_k + std^2 I."""
        sde = self._need_sde()
        alpha, std = sde.marginal_coeffs(torch.tensor([float(t)], dtype=torch.float64))
        eye = torch.eye(self.dim, dtype=torch.float64)
        return GaussianMixture(self.weights, alpha * self.means,
                               alpha ** 2 * self.covs + std ** 2 * eye, sde=None,
                               labels=self.labels)

    def sample(self, n: int, generator: Optional[torch.Generator] = None,
               dtype: Optional[torch.dtype] = None) -> Tensor:
        """n draws [n, D] from the data distribution.

        Randomness: the component labels (torch.multinomial) first, then one [n, D]
        standard normal tensor.
        """
        n = check_int("n", n, minimum=1)
        device = generator.device if generator is not None else None
        k = torch.multinomial(self.weights.to(device), n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64, device=device)
        x = self.means.to(device)[k] + torch.einsum("nij,nj->ni", self._chol.to(device)[k], z)
        return x.to(dtype or torch.get_default_dtype())

    # -- densities and scores -------------------------------------------------------------
    def _need_sde(self) -> SDE:
        if self.sde is None:
            raise ValueError("this oracle has no SDE: pass sde= to the constructor or use "
                             ".with_sde(sde) before asking for the marginal at time t")
        return self.sde

    def _components(self, x: Tensor, t: Optional[TimeLike]
                    ) -> Tuple[Tensor, Tensor, Tensor]:
        """Per-component log w_k N(x; m_k, C_k) [n, K], and m_k, Cholesky(C_k) broadcastable."""
        check_state("x", x, min_dim=2)
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape [n, {self.dim}], got {tuple(x.shape)}")
        opts = dict(dtype=x.dtype, device=x.device)
        mu, cov, w = self.means.to(**opts), self.covs.to(**opts), self.weights.to(**opts)
        if t is None:
            means, chol = mu[None], self._chol.to(**opts)[None]  # [1, K, D], [1, K, D, D]
        else:
            tt = self._need_sde().time(t, batch=x.shape[0], like=x)
            if bool((tt == tt[0]).all()):  # one time for the whole batch: one factorization
                tt = tt[:1]
            alpha, std = self.sde._marginal_coeffs(tt)  # [B] with B in {1, n}
            eye = torch.eye(self.dim, **opts)
            means = alpha[:, None, None] * mu[None]
            cov_t = (alpha ** 2)[:, None, None, None] * cov[None] \
                + (std ** 2)[:, None, None, None] * eye
            chol = torch.linalg.cholesky(cov_t)
        diff = x[:, None, :] - means  # [n, K, D]
        sol = torch.linalg.solve_triangular(chol, diff[..., None], upper=False)[..., 0]
        logdet = torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)  # [B, K]
        logn = -0.5 * sol.pow(2).sum(-1) - logdet - 0.5 * self.dim * math.log(2 * math.pi)
        return torch.log(w) + logn, diff, chol

    def log_prob(self, x: Tensor, t: Optional[TimeLike] = None,
                 cond: Optional[Tensor] = None) -> Tensor:
        """log p_t(x) in nats, [n]; t None (default) gives the data density p_0 itself.
        With ``cond`` ([n] labels, -1 for none): log p_t(x | c).

        Note that under a VESDE the marginal at t = 0 has std sigma_min (score_sde's
        convention), so log_prob(x, 0.0) differs from log_prob(x).
        """
        logw, _, _ = self._components(x, t)
        if cond is None:
            return torch.logsumexp(logw, dim=-1)
        keep = self._in_class(cond, x)
        # p(x | c) = sum_{k: label c} w_k N_k(x) / sum_{k: label c} w_k
        log_wc = torch.log(torch.where(keep, self.weights.to(logw)[None], 0.0).sum(-1))
        return torch.logsumexp(logw.masked_fill(~keep, -math.inf), dim=-1) - log_wc

    def score(self, x: Tensor, t: TimeLike, cond: Optional[Tensor] = None) -> Tensor:
        """grad_x log p_t(x), [n, D]: usable directly as the score function of a sampler.
        With ``cond`` ([n] labels; -1 for the unconditional score of that row): the exact
        conditional score grad_x log p_t(x | c), the responsibilities restricted to the
        components labelled c."""
        logw, diff, chol = self._components(x, t)
        if cond is not None:
            logw = logw.masked_fill(~self._in_class(cond, x), -math.inf)
        resp = torch.softmax(logw, dim=-1)  # [n, K]
        # C_k^{-1} (x - m_k) by two triangular solves with the Cholesky factor
        prec_diff = torch.cholesky_solve(diff[..., None], chol)[..., 0]
        return -(resp[..., None] * prec_diff).sum(1)

    def class_logits(self, x: Tensor, t: TimeLike) -> Tensor:
        """The exact class posterior log p_t(c | x) = log sum_{k: label c} w_k N_k(x) -
        log p_t(x), [n, n_classes]: a time-dependent classifier f(x, t) for classifier
        guidance that makes it exact (Song et al. 2021, Sec. 5, eq. 14)."""
        labels = self._need_labels().to(x.device)
        logw, _, _ = self._components(x, t)
        onehot = labels[None, :] == torch.arange(self.n_classes, device=x.device)[:, None]
        per_class = torch.logsumexp(
            logw[:, None, :].masked_fill(~onehot[None], -math.inf), dim=-1)  # [n, C]
        return per_class - torch.logsumexp(logw, dim=-1, keepdim=True)

    def _in_class(self, cond: Tensor, x: Tensor) -> Tensor:
        """[n, K] mask of the components of each row's class (every one for label -1)."""
        labels = self._need_labels().to(x.device)
        if not isinstance(cond, Tensor) or cond.shape != (x.shape[0],):
            raise ValueError(f"cond must be a [{x.shape[0]}] tensor of labels (one per row "
                             f"of x), got {cond!r}")
        cond = cond.to(x.device).long()
        if bool(((cond < -1) | (cond >= self.n_classes)).any()):
            raise ValueError(f"cond must hold labels in [0, {self.n_classes}) or -1 (none), "
                             f"got {cond.unique().tolist()}")
        return (labels[None, :] == cond[:, None]) | (cond[:, None] == -1)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(K={self.weights.shape[0]}, D={self.dim}, "
                f"sde={self.sde!r})")


def _check_labels(labels, K: int) -> Tensor:
    """[K] int64 labels with every class 0..max present."""
    lab = torch.as_tensor(labels) if not isinstance(labels, Tensor) else labels
    if lab.dtype.is_floating_point or lab.dtype == torch.bool or lab.dim() != 1 \
            or lab.shape[0] != K:
        raise ValueError(f"labels must be {K} integers (one per component), got "
                         f"{labels!r}")
    lab = lab.long().cpu()
    if bool((lab < 0).any()) or set(lab.tolist()) != set(range(int(lab.max()) + 1)):
        raise ValueError(f"labels must be integers >= 0 with every class 0..max used, got "
                         f"{lab.tolist()}")
    return lab


class GaussianData(GaussianMixture):
    """Gaussian data N(mean, cov) in D dimensions, and its diffused marginals
    N(alpha mean, alpha^2 cov + std^2 I) (one-component :class:`GaussianMixture`).

    Args:
        mean: [D]. cov: [D, D] symmetric positive definite. sde: as for GaussianMixture.
    """

    def __init__(self, mean, cov, sde: Optional[SDE] = None):
        mean = as_real_tensor("mean", mean)
        cov = as_real_tensor("cov", cov)
        if mean.dim() != 1:
            raise ValueError(f"mean must be 1-D [D], got shape {tuple(mean.shape)}")
        D = mean.shape[0]
        if cov.shape != (D, D):
            raise ValueError(f"cov must have shape [D, D] = [{D}, {D}], got {tuple(cov.shape)}")
        if not torch.allclose(cov, cov.T, atol=1e-12, rtol=1e-10):
            raise ValueError("cov must be symmetric")
        if torch.linalg.cholesky_ex(cov)[1] != 0:
            raise ValueError(f"cov is not positive definite (eigenvalues "
                             f"{torch.linalg.eigvalsh(cov).tolist()})")
        super().__init__(torch.ones(1, dtype=torch.float64), mean[None], cov[None], sde=sde)

    @staticmethod
    def _rebuild(obj: "GaussianMixture", sde: Optional[SDE]) -> "GaussianData":
        return GaussianData(obj.means[0], obj.covs[0], sde=sde)

    def marginal(self, t: float) -> "GaussianData":
        m = super().marginal(t)
        return GaussianData(m.means[0], m.covs[0])

    def condition(self, mask: Tensor, known: Tensor) -> Tuple[Tensor, Tensor]:
        """The exact inpainting posterior p(x_u | x_k = known) of the data: mean [D_u] and
        covariance [D_u, D_u] of the unknown coordinates (mask == 0), by the Schur
        complement mu_u + S_uk S_kk^-1 (y - mu_k), S_uu - S_uk S_kk^-1 S_ku (float64).

        Args:
            mask: [D] of 0/1, 1 where the coordinate is known.
            known: [D] data; its entries where mask == 1 are the observed values y.
        """
        m = as_real_tensor("mask", mask).reshape(-1).bool()
        y = as_real_tensor("known", known).reshape(-1)
        if m.shape[0] != self.dim or y.shape[0] != self.dim:
            raise ValueError(f"mask and known must have {self.dim} entries, got "
                             f"{m.shape[0]} and {y.shape[0]}")
        mu, S = self.means[0], self.covs[0]
        u, k = ~m, m
        gain = S[u][:, k] @ torch.linalg.inv(S[k][:, k])  # S_uk S_kk^-1
        return mu[u] + gain @ (y[k] - mu[k]), S[u][:, u] - gain @ S[k][:, u]
