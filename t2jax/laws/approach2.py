"""Approach 2 (accuracy-based T2, Beta regression), one parameter set per task.

Per task t and model (N, D):
- task loss L̂ = E + A/N^α + B/D^β, where the task loss is the mean over questions of the gold
  answer's *total* NLL (nats per answer, not per token): it is −E[log p_i] for p_i = exp(−nll_i),
  the quantity the NLL-only observation below uses, and it needs no token counts. Observed as
  log(mean NLL) ~ Normal(log L̂ + κ_g·(ȳ_g − μ_g), σ_t) given the group's observed mean pass rate
  ȳ_g, or a Student-t (`prepare(loss_likelihood="student_t")`, `optim.observation`) for ladders
  with outlier losses. The same questions give the mean NLL and the pass rate, so their sampling
  errors are correlated (an easy draw of questions lowers one and raises the other): treating them
  as independent counts that error twice and gives too narrow a posterior (ours). The loss is
  therefore observed conditionally on the pass rate, with κ_g the regression slope of nll_i/mean
  NLL on c_i/n_i over the group's questions (a plug-in from the data; `question_slope`), which
  for i.i.d. questions is the slope of the means too; μ_g is the model's mean pass@1;
- per-question accuracy p_i ~ Beta(a, b) with mean μ = floor + (ceil − floor)·sigmoid(θ1 − θ2·L̂)
  (θ2 > 0) and precision ν = exp(θ3 + θ4·L̂), softly capped at 1e4 (`precision`); a = μν,
  b = (1 − μ)ν. The floor is chance
  (1/#choices for multiple choice, else 0) and the ceiling (default 1) are given, not fitted
  (ours): L̂ ≥ E already caps μ at floor + (ceil − floor)·sigmoid(θ1 − θ2·E), so a fitted ceiling
  is not identifiable from a ladder; give ceil < 1 for tasks with known label noise;
- sampled questions: c_i ~ BetaBinomial(n_i, a, b), written on aggregated counts, in one of two
  exact forms chosen by `prepare` (whichever is cheaper): gammaln of each distinct (n, c) in a
  model × task group, weighted by its multiplicity; or, for integer counts, the rising-factorial
  form B(a+c, b+n−c)/B(a, b) = ∏_{j<c}(a+j)·∏_{j<n−c}(b+j) / ∏_{j<n}(a+b+j), summed per group as
  Σ_j #{c_i > j}·log(a+j) + … (G × n_max logs: no gammaln, ~10x cheaper when n_max is modest);
  NLL-only questions: p_i = exp(−nll_i) ~ Beta(a, b), aggregated to per-group sums of log p and
  log(1 − p).

Sampling is in a decorrelated parameterisation (loss-law amplitudes at the ladder's centre, link
in standardised loss z = (L̂ − L_c)/L_s); `to_params` maps draws back to the parameters above.
Parameter dicts hold arrays whose last axis is the task (T,), or (S, T) for draws; predictions
have shape params-shape + query-shape (`expected_passk`), `task_mean_passk` averages the tasks.
"""

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.scipy.special import gammaln
from scipy import special

from t2jax import passk as passk_lib
from t2jax.laws import chinchilla, optim
from t2jax.laws import posterior as posterior_lib
from t2jax.laws import table as table_lib

SITES = ("logit_E", "amp_N", "amp_D", "logit_alpha", "logit_beta", "log_sigma", "eta1", "log_eta2", "eta3",
         "eta4")
# Precision cap: beyond ~1e4 the Beta law is a point mass for any ladder's counts (a per-question
# sd of pass@1 under 0.005), while the gammaln form's terms (~ν log ν) lose all their digits to
# cancellation as ν grows (at ν ~ 1e37 a MAP search found accuracy log-likelihoods of +1e22).
LOG_NU_MAX = float(np.log(1e4))
PARAMS = ("E", "A", "B", "alpha", "beta", "sigma", "theta1", "theta2", "theta3", "theta4", "floor",
          "ceil")


@dataclasses.dataclass(frozen=True)
class Approach2Data:
  """Fitting data, aggregated. G = model × task groups, K = distinct (group, n, c) entries."""
  tasks: tuple
  floor_T: np.ndarray
  ceil_T: np.ndarray
  task_G: np.ndarray
  logN_G: np.ndarray
  logD_G: np.ndarray
  nll_G: np.ndarray  # mean per-answer gold NLL of the group's questions
  pass_rate_G: np.ndarray  # mean c/n of the group's sampled questions that have an NLL
  slope_G: np.ndarray  # κ: regression slope of nll_i / mean NLL on c_i / n_i (`question_slope`)
  group_K: np.ndarray
  n_K: np.ndarray
  c_K: np.ndarray
  weight_K: np.ndarray  # questions with this (n, c) in the group
  log_choose: float  # Σ_K weight·log C(n, c): makes the log-likelihood exact
  beta_count_G: np.ndarray  # NLL-only questions per group
  sum_logp_G: np.ndarray
  sum_log1mp_G: np.ndarray
  center_logN: float
  center_logD: float
  loss_center_T: np.ndarray
  loss_scale_T: np.ndarray
  loss_min_T: np.ndarray  # the task's lowest group loss: E's upper bound
  log_median_T: np.ndarray  # the median log group loss per task (the amplitudes' prior centre)
  mask_G: np.ndarray  # 1 for a group, 0 for padding (`pad`)
  # Rising-factorial form (None: the gammaln form): questions of the group with c > j,
  # n − c > j and n > j, for j < n_max; shape (G, n_max).
  above_c_GxJ: Optional[np.ndarray] = None
  above_nmc_GxJ: Optional[np.ndarray] = None
  above_n_GxJ: Optional[np.ndarray] = None
  loss_likelihood: str = "normal"  # the task-loss observation's law: "normal" or "student_t"


# A pytree (tasks and the likelihood static), so jitted searches take the data as arguments.
jax.tree_util.register_dataclass(
    Approach2Data, meta_fields=["tasks", "loss_likelihood"],
    data_fields=[f.name for f in dataclasses.fields(Approach2Data)
                 if f.name not in ("tasks", "loss_likelihood")])


def row_groups(results: table_lib.ResultsTable) -> np.ndarray:
  """Each row's model × task group index (R,), in the group order `prepare` uses."""
  task_R = np.searchsorted(np.array(results.tasks, dtype=object), results.task)
  _, model_R = np.unique(results.model_id, return_inverse=True)
  return np.unique(model_R * len(results.tasks) + task_R, return_inverse=True)[1].ravel()


def _per_task(tasks, values: Optional[dict], name: str, default: float, hint: str) -> np.ndarray:
  if values is None:
    return np.full(len(tasks), default)
  missing = [t for t in tasks if t not in values]
  if missing:
    raise ValueError(f"approach2.prepare: {name} has no entry for tasks {missing}; {hint}")
  return np.array([float(values[t]) for t in tasks])


def _counts_above(group_R, x_R, G, J) -> np.ndarray:
  """(G, J): rows of each group with x > j, for j = 0..J−1."""
  hist_GxX = np.zeros((G, J + 1))
  np.add.at(hist_GxX, (group_R, x_R), 1.0)
  return np.cumsum(hist_GxX[:, ::-1], axis=1)[:, ::-1][:, 1:]


def question_slope(group_R, nll_R, rate_R, G) -> tuple:
  """(mean rate, κ) per group (G,): the mean of `rate_R` and the least-squares slope of
  nll / (the group's mean nll) on rate over each group's rows; κ = 0 where a group has under 3
  rows or no spread in rate."""
  count_G = np.bincount(group_R, minlength=G).astype(np.float64)
  safe_G = np.maximum(count_G, 1.0)
  rate_G = np.bincount(group_R, rate_R, G) / safe_G
  rel_R = nll_R / (np.bincount(group_R, nll_R, G) / safe_G)[group_R]
  dev_R = rate_R - rate_G[group_R]
  var_G = np.bincount(group_R, dev_R ** 2, G)
  cov_G = np.bincount(group_R, dev_R * rel_R, G)
  ok_G = (count_G >= 3) & (var_G > 1e-12 * np.maximum(count_G, 1.0))
  return rate_G, np.where(ok_G, cov_G / np.where(ok_G, var_G, 1.0), 0.0)


def prepare(results: table_lib.ResultsTable, *, floors: Optional[dict] = None,
            ceilings: Optional[dict] = None, likelihood: str = "auto",
            loss_likelihood: str = "normal") -> Approach2Data:
  """Aggregates a results table. `floors` maps every task to its chance accuracy (None: all 0),
  `ceilings` to its highest reachable accuracy (None: all 1). `likelihood` picks the form of the
  Beta-binomial sum: "gammaln", "rising" or "auto" (rising when G·n_max <= 4·K, i.e. when its
  logs cost less than the gammaln form's gammaln and digamma calls). `loss_likelihood` is the
  law of the task-loss observation: "normal" or "student_t" (`optim.observation`)."""
  if likelihood not in ("auto", "gammaln", "rising"):
    raise ValueError(f"approach2.prepare: likelihood={likelihood!r}; use 'auto', 'gammaln' or "
                     "'rising'")
  optim.check_likelihood("approach2.prepare", "loss_likelihood", loss_likelihood)
  tasks = results.tasks
  floor_T = _per_task(tasks, floors, "floors", 0.0,
                      "give 1/#choices for multiple choice and 0 for generative tasks")
  ceil_T = _per_task(tasks, ceilings, "ceilings", 1.0, "give 1 unless labels are known noisy")
  if not np.all((0 <= floor_T) & (floor_T < ceil_T) & (ceil_T <= 1)):
    raise ValueError(f"approach2.prepare: need 0 <= floor < ceil <= 1 per task, got floors "
                     f"{dict(zip(tasks, floor_T))} and ceilings {dict(zip(tasks, ceil_T))}; fix them")
  group_R = row_groups(results)
  G = int(group_R.max()) + 1
  first_G = np.zeros(G, np.int64)
  first_G[group_R[::-1]] = np.arange(len(group_R))[::-1]
  task_G = np.searchsorted(np.array(tasks, dtype=object), results.task[first_G])

  has_nll = results.has_nll
  nll_count_G = np.bincount(group_R[has_nll], minlength=G)
  if np.any(nll_count_G == 0):
    bad = [f"{results.model_id[first_G[g]]}/{tasks[task_G[g]]}" for g in np.flatnonzero(nll_count_G == 0)]
    raise ValueError(f"{results.source}: Approach 2 needs gold-answer `nll` for the task loss, and "
                     f"these model/task groups have none: {bad[:10]}; add nll or use Approach 1")
  nll_G = np.bincount(group_R[has_nll], results.nll[has_nll], G) / nll_count_G

  sampled = results.sampled
  both = sampled & has_nll
  pass_rate_G, slope_G = question_slope(group_R[both], results.nll[both],
                                        results.c[both] / results.n[both], G)
  base = int(results.n.max()) + 1
  keys, weight_K = np.unique((group_R[sampled] * base + results.n[sampled]) * base
                             + results.c[sampled], return_counts=True)
  c_K, n_K, group_K = keys % base, (keys // base) % base, keys // base // base
  log_choose = float(np.sum(weight_K * (special.gammaln(n_K + 1.0) - special.gammaln(c_K + 1.0)
                                        - special.gammaln(n_K - c_K + 1.0))))
  J = int(results.n.max())
  if likelihood == "auto":
    likelihood = "rising" if G * J <= 4 * len(weight_K) else "gammaln"
  above = {}
  if likelihood == "rising":
    n_S, c_S, group_S = results.n[sampled], results.c[sampled], group_R[sampled]
    above = dict(above_c_GxJ=_counts_above(group_S, c_S, G, J),
                 above_nmc_GxJ=_counts_above(group_S, n_S - c_S, G, J),
                 above_n_GxJ=_counts_above(group_S, n_S, G, J))

  only = ~sampled
  if np.any(only & (results.nll <= 0)):
    rows = (np.flatnonzero(only & (results.nll <= 0)) + 1)[:10].tolist()
    raise ValueError(f"{results.source}: NLL-only data rows {rows} have nll = 0, i.e. p = 1, which "
                     "a Beta law gives zero density; give the samples (n, c) or a positive nll")
  nll_only = results.nll[only]
  beta_count_G = np.bincount(group_R[only], minlength=G)
  sum_logp_G = np.bincount(group_R[only], -nll_only, G)
  sum_log1mp_G = np.bincount(group_R[only], np.log(-np.expm1(-nll_only)), G)

  logN_G, logD_G = np.log(results.N[first_G]), np.log(results.D[first_G])
  loss_center_T = np.array([nll_G[task_G == t].mean() for t in range(len(tasks))])
  loss_scale_T = np.array([max(nll_G[task_G == t].std(), 0.01 * loss_center_T[t])
                           for t in range(len(tasks))])
  return Approach2Data(
      tasks=tasks, floor_T=floor_T, ceil_T=ceil_T, task_G=task_G, logN_G=logN_G, logD_G=logD_G, nll_G=nll_G,
      pass_rate_G=pass_rate_G, slope_G=slope_G,
      group_K=group_K, n_K=n_K.astype(np.float64), c_K=c_K.astype(np.float64),
      weight_K=weight_K.astype(np.float64), log_choose=log_choose,
      beta_count_G=beta_count_G.astype(np.float64), sum_logp_G=sum_logp_G,
      sum_log1mp_G=sum_log1mp_G, center_logN=float(logN_G.mean()),
      center_logD=float(logD_G.mean()), loss_center_T=loss_center_T, loss_scale_T=loss_scale_T,
      loss_min_T=np.array([nll_G[task_G == t].min() for t in range(len(tasks))]),
      log_median_T=np.array([np.median(np.log(nll_G[task_G == t])) for t in range(len(tasks))]),
      mask_G=np.ones(G), loss_likelihood=loss_likelihood, **above)


def pad(data: Approach2Data, sizes: Optional[tuple] = None) -> Approach2Data:
  """`data` with its groups and (group, n, c) entries padded by copies of the first that weigh 0
  (`mask_G` 0, no counts) to `optim.bucket` sizes, or to `sizes` = (G, K) when larger: the same
  log posterior in shapes that subsets of a ladder (backtest folds) share, so a jitted search
  compiles once for all of them."""
  G, K = len(data.task_G), len(data.group_K)
  want_G, want_K = sizes or (0, 0)
  extra_G, extra_K = optim.bucket(max(G, want_G)) - G, optim.bucket(max(K, want_K)) - K
  by_group = lambda x, fill=None: np.concatenate(
      [x, np.repeat(x[:1] if fill is None else np.full_like(x[:1], fill), extra_G, axis=0)])
  by_entry = lambda x: np.concatenate([x, np.zeros(extra_K, x.dtype)])
  above = {name: by_group(getattr(data, name), 0.0) for name in (
      "above_c_GxJ", "above_nmc_GxJ", "above_n_GxJ") if getattr(data, name) is not None}
  return dataclasses.replace(
      data, task_G=by_group(data.task_G), logN_G=by_group(data.logN_G),
      logD_G=by_group(data.logD_G), nll_G=by_group(data.nll_G), mask_G=by_group(data.mask_G, 0.0),
      pass_rate_G=by_group(data.pass_rate_G), slope_G=by_group(data.slope_G),
      beta_count_G=by_group(data.beta_count_G, 0.0), sum_logp_G=by_group(data.sum_logp_G, 0.0),
      sum_log1mp_G=by_group(data.sum_log1mp_G, 0.0), group_K=by_entry(data.group_K),
      n_K=by_entry(data.n_K), c_K=by_entry(data.c_K), weight_K=by_entry(data.weight_K), **above)


# ------------------------------------------------------------------------------------- model

def sample_sites(data: Approach2Data) -> dict:
  """The priors (weakly informative, scaled to each task's observed loss); all (T,). E and the
  exponents are bounded as in `optim.power_sum_model`:
  E = (lowest task loss)·sigmoid(logit_E), α, β = 2·sigmoid(logit_·) in (0, 2)."""
  T = len(data.tasks)
  log_median_T = data.log_median_T
  normal = lambda loc, scale: dist.Normal(jnp.broadcast_to(loc, (T,)), scale).to_event(1)
  return {
      "logit_E": numpyro.sample("logit_E", normal(0.0, 1.5)),
      "amp_N": numpyro.sample("amp_N", normal(log_median_T - 1.0, 2.0)),
      "amp_D": numpyro.sample("amp_D", normal(log_median_T - 1.0, 2.0)),
      "logit_alpha": numpyro.sample("logit_alpha", normal(optim.LOGIT_S0, 1.0)),
      "logit_beta": numpyro.sample("logit_beta", normal(optim.LOGIT_S0, 1.0)),
      "log_sigma": numpyro.sample("log_sigma", normal(jnp.log(0.02), 1.0)),
      "eta1": numpyro.sample("eta1", normal(0.0, 3.0)),
      "log_eta2": numpyro.sample("log_eta2", normal(0.0, 1.5)),
      "eta3": numpyro.sample("eta3", normal(1.0, 2.0)),
      "eta4": numpyro.sample("eta4", normal(0.0, 1.0)),
  }


def _bounded(z: dict, data: Approach2Data):
  """(E, α, β) from the bounded sites."""
  E = data.loss_min_T * jax.nn.sigmoid(z["logit_E"])
  return E, 2.0 * jax.nn.sigmoid(z["logit_alpha"]), 2.0 * jax.nn.sigmoid(z["logit_beta"])


def precision(log_nu):
  """ν from the linear predictor log ν = θ3 + θ4·L̂, softly capped: exp(m − softplus(m − log ν))
  with m = LOG_NU_MAX (≈ exp(log ν) well below the cap, → 1e4 above it; smooth for NUTS)."""
  return jnp.exp(LOG_NU_MAX - jax.nn.softplus(LOG_NU_MAX - log_nu))


def group_beta(z: dict, data: Approach2Data):
  """(L̂_G, a_G, b_G) for every model × task group from sampled sites `z` (T,)."""
  t = data.task_G
  E, alpha, beta = _bounded(z, data)
  loss_G = (E[t] + jnp.exp(z["amp_N"][t] - alpha[t] * (data.logN_G - data.center_logN))
            + jnp.exp(z["amp_D"][t] - beta[t] * (data.logD_G - data.center_logD)))
  std_G = (loss_G - data.loss_center_T[t]) / data.loss_scale_T[t]
  floor_G = data.floor_T[t]
  mu_G = floor_G + (data.ceil_T[t] - floor_G) * jax.nn.sigmoid(
      z["eta1"][t] - jnp.exp(z["log_eta2"][t]) * std_G)
  nu_G = precision(z["eta3"][t] + z["eta4"][t] * std_G)
  return loss_G, mu_G * nu_G, (1 - mu_G) * nu_G


def loss_log_density(z: dict, data: Approach2Data, loss_G, a_G, b_G):
  """Per group (G,): log(mean NLL) ~ Normal(log L̂ + κ·(ȳ − μ), σ_t) given the observed pass rate
  ȳ (μ = a/(a + b)), or Student-t per `data.loss_likelihood` (0 for padding)."""
  sigma_G = jnp.exp(z["log_sigma"][data.task_G])
  loc_G = jnp.log(loss_G) + data.slope_G * (data.pass_rate_G - a_G / (a_G + b_G))
  return data.mask_G * optim.observation(data.loss_likelihood, loc_G, sigma_G).log_prob(
      jnp.log(data.nll_G))


def loss_log_likelihood(z: dict, data: Approach2Data, loss_G, a_G, b_G):
  """`loss_log_density` summed over groups."""
  return jnp.sum(loss_log_density(z, data, loss_G, a_G, b_G))


def accuracy_log_likelihood(data: Approach2Data, a_G, b_G):
  """Beta-binomial on aggregated counts plus the Beta density of NLL-only p_i (exact)."""
  nll_only = (jnp.sum(data.beta_count_G * (gammaln(a_G + b_G) - gammaln(a_G) - gammaln(b_G)))
              + jnp.sum((a_G - 1) * data.sum_logp_G + (b_G - 1) * data.sum_log1mp_G))
  if data.above_c_GxJ is None:
    return _gammaln_form(data, a_G, b_G) + nll_only
  j_J = jnp.arange(data.above_c_GxJ.shape[1], dtype=a_G.dtype)
  a_GxJ, b_GxJ = a_G[:, None] + j_J, b_G[:, None] + j_J
  return (jnp.sum(data.above_c_GxJ * jnp.log(a_GxJ)) + jnp.sum(data.above_nmc_GxJ * jnp.log(b_GxJ))
          - jnp.sum(data.above_n_GxJ * jnp.log(a_GxJ + b_G[:, None])) + data.log_choose + nll_only)


def _gammaln_form(data: Approach2Data, a_G, b_G):
  """Σ_K weight·log BetaBinomial(c | n, a, b) over the distinct entries, through one gammaln call
  (XLA compiles gammaln and its gradient once per call site; NUTS compile time grows with each)."""
  a_K, b_K = a_G[data.group_K], b_G[data.group_K]
  K, G = a_K.shape[0], a_G.shape[0]
  lgamma = gammaln(jnp.concatenate([a_K + data.c_K, b_K + data.n_K - data.c_K,
                                    a_K + b_K + data.n_K, a_G + b_G, a_G, b_G]))
  per_entry = lgamma[:K] + lgamma[K:2 * K] - lgamma[2 * K:3 * K]
  log_norm_G = lgamma[3 * K:3 * K + G] - lgamma[3 * K + G:3 * K + 2 * G] - lgamma[3 * K + 2 * G:]
  sampled_G = jnp.zeros_like(a_G).at[data.group_K].add(data.weight_K)
  return jnp.sum(data.weight_K * per_entry) + data.log_choose + jnp.sum(sampled_G * log_norm_G)


def model(data: Approach2Data):
  """The NumPyro model: priors, the task-loss likelihood and the accuracy likelihood."""
  z = sample_sites(data)
  loss_G, a_G, b_G = group_beta(z, data)
  numpyro.factor("loss_ll", loss_log_likelihood(z, data, loss_G, a_G, b_G))
  numpyro.factor("accuracy_ll", accuracy_log_likelihood(data, a_G, b_G))


# --------------------------------------------------------------------- parameters, predictions

def to_params(z: dict, data: Approach2Data) -> dict:
  """Sampled sites (…, T) → E, A, B, alpha, beta, sigma, theta1..4, floor, ceil (…, T)."""
  E, alpha, beta = _bounded(z, data)
  theta2, theta4 = jnp.exp(z["log_eta2"]) / data.loss_scale_T, z["eta4"] / data.loss_scale_T
  return dict(
      E=E, A=jnp.exp(z["amp_N"] + alpha * data.center_logN),
      B=jnp.exp(z["amp_D"] + beta * data.center_logD), alpha=alpha, beta=beta,
      sigma=jnp.exp(z["log_sigma"]), theta1=z["eta1"] + theta2 * data.loss_center_T,
      theta2=theta2, theta3=z["eta3"] - theta4 * data.loss_center_T, theta4=theta4,
      floor=jnp.broadcast_to(data.floor_T, jnp.shape(alpha)),
      ceil=jnp.broadcast_to(data.ceil_T, jnp.shape(alpha)))


def from_params(params: dict, data: Approach2Data) -> dict:
  """The inverse of `to_params` (params (T,) → sites (T,))."""
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  for name, given in (("floor", data.floor_T), ("ceil", data.ceil_T)):
    if not np.allclose(p[name], given):
      raise ValueError(f"approach2: params `{name}` {p[name]} differ from the data's {given}; "
                       "fit and prepare with the same floors and ceilings")
  return dict(
      logit_E=optim.logit(p["E"] / data.loss_min_T),
      amp_N=np.log(p["A"]) - p["alpha"] * data.center_logN,
      amp_D=np.log(p["B"]) - p["beta"] * data.center_logD,
      logit_alpha=optim.logit(p["alpha"] / 2),
      logit_beta=optim.logit(p["beta"] / 2), log_sigma=np.log(p["sigma"]),
      eta1=p["theta1"] - p["theta2"] * data.loss_center_T,
      log_eta2=np.log(p["theta2"] * data.loss_scale_T),
      eta3=p["theta3"] + p["theta4"] * data.loss_center_T, eta4=p["theta4"] * data.loss_scale_T)


def beta_params(params: dict, N, D):
  """(a, b) of the per-question accuracy law; shape params-shape + broadcast(N, D)-shape."""
  N, D = jnp.broadcast_arrays(jnp.asarray(N), jnp.asarray(D))
  loss = chinchilla.loss(params, N, D)
  p = optim.expand_params(params, N.ndim)
  mu = p["floor"] + (p["ceil"] - p["floor"]) * jax.nn.sigmoid(p["theta1"] - p["theta2"] * loss)
  nu = precision(p["theta3"] + p["theta4"] * loss)
  return mu * nu, (1 - mu) * nu


def expected_passk(params: dict, N, D, k):
  """E[pass@k] = 1 − B(a, b + k)/B(a, b); shape params-shape + broadcast(N, D, k)-shape.

  With params (T,) the leading axis is the task; with draws (S, T) it is (S, T, ...).
  """
  N, D, k = jnp.broadcast_arrays(jnp.asarray(N), jnp.asarray(D), jnp.asarray(k))
  a, b = beta_params(params, N, D)
  return passk_lib.beta_passk(a, b, k)


def task_mean_passk(params: dict, N, D, k):
  """The mean over tasks of `expected_passk`: shape params-shape without the task axis + query."""
  out = expected_passk(params, N, D, k)
  query_ndim = len(jnp.broadcast_shapes(jnp.shape(N), jnp.shape(D), jnp.shape(k)))
  return jnp.mean(out, axis=out.ndim - query_ndim - 1)


# ------------------------------------------------------------------------------- fitting

def _initial_sites(data: Approach2Data, grid: Optional[dict], pad_to: int = 0) -> dict:
  """Start for the MAP search: per-task Chinchilla fits of the loss, a flat link. A task whose loss
  is too flat or noisy for a sane fit (E not below its lowest loss, exponents outside [0.01, 1.95])
  starts from E = half its lowest loss and the rest split evenly between the N and D terms at
  α = β = 0.3. `pad_to`: the rows each start fit is padded to (`optim.fit_power_sum`)."""
  init = {k: np.zeros(len(data.tasks)) for k in SITES}
  for t in range(len(data.tasks)):
    sel = data.task_G == t
    N, D, nll = np.exp(data.logN_G[sel]), np.exp(data.logD_G[sel]), data.nll_G[sel]
    p = chinchilla.fit(N, D, nll, grid=grid, pad_to=pad_to).params
    fitted = np.asarray(chinchilla.loss(p, N, D))
    resid = np.log(nll) - np.log(fitted)
    if (0.01 <= p["alpha"] <= 1.95 and 0.01 <= p["beta"] <= 1.95
        and 1e-4 <= p["E"] / data.loss_min_T[t] <= 0.99 and np.all(np.isfinite(resid))):
      e, alpha, beta = p["E"], p["alpha"], p["beta"]
      amp_N = np.log(p["A"]) - alpha * data.center_logN
      amp_D = np.log(p["B"]) - beta * data.center_logD
      spread = resid.std()
    else:
      e, alpha, beta = 0.5 * nll.min(), 0.3, 0.3
      amp_N = amp_D = np.log((np.median(nll) - e) / 2)
      spread = np.log(nll).std()
    init["logit_E"][t], init["amp_N"][t], init["amp_D"][t] = (
        optim.logit(e / data.loss_min_T[t]), amp_N, amp_D)
    init["logit_alpha"][t] = optim.logit(alpha / 2)
    init["logit_beta"][t] = optim.logit(beta / 2)
    init["log_sigma"][t] = np.log(max(spread, 1e-3))
  init["eta3"][:] = 1.0
  return init


def map_sites(data: Approach2Data, *, grid: Optional[dict] = None, max_iter: int = 2000,
              sizes: Optional[tuple] = None) -> dict:
  """Maximum a posteriori sites (`optim.map_sites`, on the data `pad`ded to `sizes`) from
  per-task Chinchilla fits of the loss and a flat link."""
  return optim.map_sites(model, _initial_sites(data, grid, (sizes or (0,))[0]), max_iter=max_iter,
                         data=pad(data, sizes))


def laplace_sd(data: Approach2Data, sites: dict, predict, query: dict,
               sizes: Optional[tuple] = None) -> np.ndarray:
  """The Laplace sd of `predict(sites, {"data": data}, **query)` at the MAP `sites`
  (`optim.laplace_sd`, on the data `pad`ded to `sizes`)."""
  return optim.laplace_sd(model, sites, predict, query, data=pad(data, sizes))


def fit_mle(data: Approach2Data, *, grid: Optional[dict] = None) -> dict:
  """Point estimate (the MAP: the likelihood plus the weak priors): params dict of (T,) arrays."""
  return {k: np.asarray(v) for k, v in to_params(map_sites(data, grid=grid), data).items()}


def sample_posterior(data: Approach2Data, *, num_chains: int = 2, num_warmup: int = 500,
                     num_samples: int = 500, seed: int = 0, mle: Optional[dict] = None,
                     dense_mass: bool = True) -> posterior_lib.Posterior:
  """NUTS posterior of every task's parameters, warm-started at the MAP (`mle`, from
  `fit_mle`, found here when not given). Draws are (S, T); meta["tasks"] names the task axis.
  `dense_mass=False` compiles faster on CPU but takes more leapfrog steps per draw."""
  init = map_sites(data) if mle is None else from_params(mle, data)
  return posterior_lib.sample_nuts(
      model, init, lambda z: to_params(z, data), num_chains=num_chains, num_warmup=num_warmup,
      num_samples=num_samples, seed=seed, dense_mass=dense_mass,
      meta={"law": "approach2", "tasks": list(data.tasks), "loss_likelihood": data.loss_likelihood},
      data=data)
