"""Pointwise log-likelihoods of each law's observations at its posterior draws, for PSIS-LOO.

Each returns ll_SxR (float64): the log-likelihood of observation r at draw s under the law's own
likelihood, so that Σ_r ll_SxR[s] is the model's log-likelihood at draw s (`diagnostics.loo`).
- Chinchilla, Approach 1: one term per table row, log y_r ~ `optim.observation` of the power sum
  (Normal or Student-t, as recorded in meta["likelihood"]);
- Approach 2: one term per model × task group (`Approach2Data` order): the task-loss observation
  plus the group's share of the accuracy likelihood (its Beta-binomial counts with their binomial
  coefficients, and its NLL-only questions' Beta densities): the per-group split of
  `approach2.accuracy_log_likelihood`'s sums, in the form `prepare` chose.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln
from scipy import special

from t2jax.laws import approach2, optim

_TERMS = {"chinchilla": (("A", "alpha"), ("B", "beta")),
          "approach1": (("A", "alpha"), ("B", "beta"), ("G", "gamma"))}


def _power_sum(post, law: str, x_list, y_R):
  if post.meta.get("law") != law:
    raise ValueError(f"pointwise.{law}: the posterior's meta['law'] is {post.meta.get('law')!r}; "
                     f"pass a {law} posterior")
  likelihood = optim.check_likelihood(f"pointwise.{law}", "meta['likelihood']",
                                      post.meta.get("likelihood", "normal"))
  logx_RxF = np.log(np.stack([np.asarray(x, np.float64) for x in x_list], axis=1))
  d = post.draws
  with jax.enable_x64(True):
    theta_SxP = jnp.stack([jnp.log(d["E"])] + [jnp.log(d[c]) for c, _ in _TERMS[law]]
                          + [jnp.asarray(d[s]) for _, s in _TERMS[law]], axis=1)
    loc_SxR = jax.vmap(lambda th: optim.power_sum_log(th, jnp.asarray(logx_RxF)))(theta_SxP)
    ll_SxR = optim.observation(likelihood, loc_SxR, jnp.asarray(d["sigma"])[:, None]).log_prob(
        jnp.log(jnp.asarray(y_R, jnp.float64)))
    return np.asarray(ll_SxR, np.float64)


def chinchilla(post, N, D, loss) -> np.ndarray:
  """(S, R): the log-likelihood of each row's loss at each draw of a Chinchilla posterior."""
  optim.check_positive_1d("pointwise.chinchilla", N=N, D=D, loss=loss)
  return _power_sum(post, "chinchilla", (N, D), loss)


def approach1(post, N, D, k, loss) -> np.ndarray:
  """(S, R): the log-likelihood of each row's T(k) at each draw of a task's Approach-1 posterior."""
  optim.check_positive_1d("pointwise.approach1", N=N, D=D, k=k, loss=loss)
  return _power_sum(post, "approach1", (N, D, k), loss)


def _accuracy_G(data: approach2.Approach2Data, a_G, b_G, log_choose_G):
  """Per group (G,): the terms of `approach2.accuracy_log_likelihood` that belong to the group."""
  G = a_G.shape[0]
  lbeta_G = gammaln(a_G + b_G) - gammaln(a_G) - gammaln(b_G)  # −log B(a, b)
  nll_only_G = (data.beta_count_G * lbeta_G + (a_G - 1) * data.sum_logp_G
                + (b_G - 1) * data.sum_log1mp_G)
  if data.above_c_GxJ is None:
    a_K, b_K = a_G[data.group_K], b_G[data.group_K]
    entry_K = data.weight_K * (gammaln(a_K + data.c_K) + gammaln(b_K + data.n_K - data.c_K)
                               - gammaln(a_K + b_K + data.n_K))
    sampled_G = np.bincount(data.group_K, data.weight_K, G)
    counts_G = jnp.zeros(G, a_G.dtype).at[data.group_K].add(entry_K) + sampled_G * lbeta_G
  else:
    j_J = jnp.arange(data.above_c_GxJ.shape[1], dtype=a_G.dtype)
    a_GxJ, b_GxJ = a_G[:, None] + j_J, b_G[:, None] + j_J
    counts_G = (jnp.sum(data.above_c_GxJ * jnp.log(a_GxJ), 1)
                + jnp.sum(data.above_nmc_GxJ * jnp.log(b_GxJ), 1)
                - jnp.sum(data.above_n_GxJ * jnp.log(a_GxJ + b_G[:, None]), 1))
  return counts_G + log_choose_G + nll_only_G


def approach2_groups(post, data: approach2.Approach2Data) -> np.ndarray:
  """(S, G): per model × task group, the log-likelihood of its task loss and its accuracy data at
  each draw of the Approach-2 posterior (draws (S, T) over `data.tasks`)."""
  if list(post.meta.get("tasks", [])) != list(data.tasks):
    raise ValueError(f"pointwise.approach2_groups: the posterior's tasks {post.meta.get('tasks')} "
                     f"differ from the data's {list(data.tasks)}; prepare the data it was fit on")
  log_choose_G = np.bincount(
      data.group_K, data.weight_K * (special.gammaln(data.n_K + 1) - special.gammaln(data.c_K + 1)
                                     - special.gammaln(data.n_K - data.c_K + 1)), len(data.task_G))
  sites = approach2.from_params(post.draws, data)  # (S, T): the sites the model saw

  def one(z):
    loss_G, a_G, b_G = approach2.group_beta(z, data)
    return (approach2.loss_log_density(z, data, loss_G, a_G, b_G)
            + _accuracy_G(data, a_G, b_G, log_choose_G))

  with jax.enable_x64(True):
    z_S = {k: jnp.asarray(v, jnp.float64) for k, v in sites.items()}
    return np.asarray(jax.jit(lambda z: jax.lax.map(one, z))(z_S), np.float64)
