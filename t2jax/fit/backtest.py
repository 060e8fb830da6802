"""Backtests inside the fitting set: how each law's error grows with extrapolation distance.

Folds over the fitted models (distinct (N, D)), each a training set whose complement is predicted:
- `tokens_per_param`: rolling origin in D/N, fit on D/N <= each distinct value, predict the rest;
- `compute`: rolling origin in training compute 6ND, likewise;
- `size`: leave one model size out.
Each kind has at most `MAX_FOLDS_PER_KIND` folds. A fold needs at least `MIN_MODELS` training
models (the loss law's five parameters and its noise: a fold fitted on fewer is identified by its
priors alone, and its errors would measure that, not the final fit's extrapolation) of 2 or more
sizes; identical training sets are fitted once. Each fold refits every law's point estimate
(Chinchilla, Approach 1 per task, Approach 2's MAP) on its training models and predicts the
others; the errors on each law's scale (`discrepancy.SCALES`), with each row's distance from its
fold's training rows, its observation noise and the fold fit's own parameter uncertainty there
(`param_sd`: the Laplace sd at the fold's MAP, `optim.laplace_sd`), give the law's discrepancy
scale per task (`discrepancy.fit_scale`: tasks differ, e.g. one barely solved in the fitted range
extrapolates far worse than the others). Counting the fold's parameter uncertainty as known
leaves σ(d) the misfit alone: the final posterior carries its own parameter uncertainty, and a
fold fitted on fewer rows has more of it, which σ(d) would otherwise count twice. A fold whose refit fails (too few identified rows, or no finite
prediction) is listed under `skipped`, not hidden.
"""

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from t2jax import passk
from t2jax.fit import config as config_lib
from t2jax.laws import approach1, approach2, chinchilla, discrepancy, optim

MIN_MODELS = 6
MAX_FOLDS_PER_KIND = 8
LOSS = "loss"  # the group name of a law without tasks (Chinchilla) in a scale's per-task dicts


def folds(N_M, D_M) -> list:
  """[(kind, label, train_M)] over models (N_M, D_M); see the module doc."""
  N_M, D_M = np.asarray(N_M, np.float64), np.asarray(D_M, np.float64)
  out, seen = [], set()

  def add(kind, label, train):
    key = train.tobytes()
    if (train.sum() >= MIN_MODELS and len(np.unique(N_M[train])) >= 2 and (~train).any()
        and key not in seen):
      seen.add(key)
      out.append((kind, label, train))

  for kind, x in (("tokens_per_param", D_M / N_M), ("compute", 6.0 * N_M * D_M)):
    for cut in _spread(_levels(x)[:-1]):
      add(kind, f"{kind} <= {cut:.3g}", x <= cut)
  for n in _spread(np.unique(N_M)):
    add("size", f"without N = {n:.4g}", N_M != n)
  return out


def _spread(values) -> np.ndarray:
  """At most `MAX_FOLDS_PER_KIND` of `values`, evenly spaced, the largest kept (a long ladder
  would otherwise refit every law dozens of times)."""
  values = np.asarray(values)
  if len(values) <= MAX_FOLDS_PER_KIND:
    return values
  return values[np.unique(np.linspace(len(values) - 1, 0, MAX_FOLDS_PER_KIND).round().astype(int))]


def _levels(x, rel: float = 0.05) -> np.ndarray:
  """The distinct levels of `x`, values within `rel` of the previous one merged (a ladder's
  "20 tokens per parameter" rungs differ in the third digit), each level its largest value."""
  x = np.sort(np.asarray(x, np.float64))
  new = np.concatenate([x[1:] > x[:-1] * (1 + rel), [True]])
  return x[new]


def _position(N, D, rng: dict) -> list:
  """Each row's log excesses beyond a fold's fitted range `rng` and that range's spans (the
  inputs of its distance, whose ρ is fitted afterwards)."""
  tpp, compute = discrepancy.excess(np.asarray(N, np.float64), np.asarray(D, np.float64),
                                    rng["log_tpp_max"], rng["log_compute_max"], xp=np)
  return [dict(tpp_excess=float(t), compute_excess=float(c), tpp_span=rng["tpp_span"],
               compute_span=rng["compute_span"])
          for t, c in zip(np.broadcast_to(tpp, np.shape(N)), np.broadcast_to(compute, np.shape(N)))]


def _points(law, fold, observed, predicted, noise, param_sd, position, meta,
            num_questions=None) -> list:
  err = discrepancy.error(discrepancy.SCALES[law], observed, predicted, num_questions)
  return [dict(m, **x, law=law, fold=fold, observed=float(o), predicted=float(p), error=float(e),
               noise=float(v), param_sd=float(u))
          for m, o, p, e, v, u, x in zip(meta, observed, predicted, err, noise, param_sd, position)
          if np.isfinite(e) and np.isfinite(u)]


def _chinchilla(losses, posts) -> Callable:
  rows = losses.fit_rows()
  sigma = float(np.median(posts["chinchilla"].draws["sigma"]))

  def run(kind_label, train_of):
    train = train_of(rows.N, rows.D)
    test = ~train
    p, sd = chinchilla.map_fit(rows.N[train], rows.D[train], rows.loss[train],
                               query=(rows.N[test], rows.D[test]))
    pred = np.asarray(chinchilla.loss(p, rows.N[test], rows.D[test]))
    rng = discrepancy.fitted_range(rows.N[train], rows.D[train])
    return _points("chinchilla", kind_label, rows.loss[test], pred, np.full(test.sum(), sigma), sd,
                   _position(rows.N[test], rows.D[test], rng),
                   [dict(N=float(n), D=float(d)) for n, d in zip(rows.N[test], rows.D[test])])
  return run


def _approach1(results, posts, cfg) -> Callable:
  tables = approach1.table_from_results(results, k_grid=config_lib.k_grid(cfg), source=cfg.accuracy)

  def run(kind_label, train_of):
    points = []
    for task, t in tables.items():
      if f"approach1/{task}" not in posts or not len(t.loss):
        continue
      sigma = float(np.median(posts[f"approach1/{task}"].draws["sigma"]))
      train = train_of(t.N, t.D)
      test = ~train
      if not test.any() or len(np.unique(t.N[train])) < 2:
        continue
      p, sd = approach1.map_fit(t.N[train], t.D[train], t.k[train], t.loss[train],
                                query=(t.N[test], t.D[test], t.k[test]))
      pred = np.asarray(approach1.neg_log_passk(p, t.N[test], t.D[test], t.k[test]))
      rng = discrepancy.fitted_range(t.N[train], t.D[train])
      points += _points("approach1", kind_label, t.loss[test], pred, np.full(test.sum(), sigma), sd,
                        _position(t.N[test], t.D[test], rng),
                        [dict(task=task, model_id=m, N=float(n), D=float(d), k=float(k))
                         for m, n, d, k in zip(t.model_id[test], t.N[test], t.D[test], t.k[test])])
    return points
  return run


def _approach2(results, floors, cfg) -> Callable:
  ks = config_lib.k_grid(cfg)
  if ks is None:
    n_min = int(results.n[results.sampled].min()) if results.sampled.any() else 1
    ks = approach1.default_k_grid(min(n_min, 1024)).astype(np.float64)

  full = approach2.prepare(results, floors=floors)
  sizes = (len(full.task_G), len(full.group_K))  # every fold padded to these: one compilation

  def run(kind_label, train_of):
    train_R = train_of(results.N, results.D)
    data = approach2.prepare(results.select(train_R), floors=floors)
    sites = approach2.map_sites(data, sizes=sizes)
    with jax.enable_x64(True):
      params = {k: np.asarray(v) for k, v in approach2.to_params(sites, data).items()}
    test = results.select(~train_R)
    rng = discrepancy.fitted_range(results.N[train_R], results.D[train_R])
    queries, points = [], []
    for model in np.unique(test.model_id):
      for j, task in enumerate(data.tasks):
        mask = (test.model_id == model) & (test.task == task)
        if not mask.any():
          continue
        N, D = float(test.N[mask][0]), float(test.D[mask][0])
        obs_K = np.array([passk.observed_passk(test.n[mask], test.c[mask], test.nll[mask], int(k))
                          for k in ks])
        with jax.enable_x64(True):
          task_params = {key: v[j] for key, v in params.items()}
          a, b = (float(x) for x in approach2.beta_params(task_params, N, D))
          pred_K = np.asarray(passk.beta_passk(a, b, ks))
          second_K = np.asarray(passk.beta_passk(a, b, 2 * ks))
        queries.append((j, N, D, int(mask.sum())))
        points.append((obs_K, pred_K, measured_noise(a, b, test.n[mask], ks, pred_K, second_K),
                       [dict(task=task, model_id=str(model), N=N, D=D, k=float(k)) for k in ks]))
    if not queries:
      return []
    query = {name: optim.bucket_pad(np.array(x, np.float64), sizes[0])
             for name, x in zip(("task_Q", "N_Q", "D_Q", "num_Q"), zip(*queries))}
    query["k_K"] = np.asarray(ks, np.float64)
    sd_QxK = approach2.laplace_sd(data, sites, _logit_passk, query, sizes=sizes).reshape(
        -1, len(ks))
    out = []
    for (_, N, D, Q), (obs_K, pred_K, noise_K, meta), sd_K in zip(queries, points, sd_QxK):
      out += _points("approach2", kind_label, obs_K, pred_K, noise_K, sd_K,
                     _position(np.full(len(ks), N), np.full(len(ks), D), rng), meta,
                     num_questions=Q)
    return out
  return run


def _logit_passk(sites, model_kwargs, task_Q, N_Q, D_Q, num_Q, k_K):
  """Approach 2's pass@k of each query (task index, N, D, question count) at every k, on the
  empirical-logit scale of `discrepancy.error`, flattened (Q·K,): what `approach2.laplace_sd`
  differentiates."""
  task_Q = task_Q.astype(jnp.int32)
  params = {key: v[task_Q] for key, v in approach2.to_params(sites, model_kwargs["data"]).items()}
  a_Q, b_Q = (jnp.diagonal(x) for x in approach2.beta_params(params, N_Q, D_Q))
  p_QxK = passk.beta_passk(a_Q[:, None], b_Q[:, None], k_K[None, :])
  share_QxK = (p_QxK * num_Q[:, None] + 0.5) / (num_Q[:, None] + 1.0)  # `discrepancy.shrink`
  return (jnp.log(share_QxK) - jnp.log1p(-share_QxK)).ravel()


def known_sd(point: dict) -> float:
  """A backtest point's sd that σ(d) need not explain: its observation noise and its fold fit's
  parameter sd together (a point written before the latter was recorded: the noise alone)."""
  return float(np.hypot(point["noise"], point.get("param_sd", 0.0)))


def question_noise(passk_K, passk2k_K, num_questions: int) -> np.ndarray:
  """The sd, on the empirical-logit scale (`discrepancy.error`), of a task's mean pass@k over
  `num_questions` questions drawn from the Beta law: Var_i[pass@k_i] = E[(1−p)^2k] − E[(1−p)^k]²
  (from pass@k and pass@2k), divided by the question count, through the logit's derivative."""
  m1, m2 = 1.0 - np.asarray(passk_K), 1.0 - np.asarray(passk2k_K)
  sd = np.sqrt(np.maximum(m2 - m1 ** 2, 0.0) / num_questions)
  p = discrepancy.shrink(passk_K, num_questions)
  return sd * num_questions / (num_questions + 1) / (p * (1 - p))


def measured_noise(a, b, n_Q, ks, passk_K, passk2k_K) -> np.ndarray:
  """The sd, on the empirical-logit scale (`discrepancy.error`), of a task's measured mean pass@k
  over its questions (n_Q samples each; 0 for NLL-only ones) under the Beta(a, b) law: the sum of
  the questions' variances over Q², each question's from its samples' unbiased estimator
  (`passk.unbiased_passk_var`: the spread between questions and within one's n samples; where
  n < k, the question's pass@k is 1 − (1 − e^−nll)^k and only the spread between questions,
  `question_noise`'s, counts), through the logit's derivative. a, b: floats, or (S,) for draws
  with passk_K, passk2k_K (S, K)."""
  ks = np.asarray(ks, np.float64)
  Q = len(n_Q)
  between_K = np.maximum((1.0 - passk2k_K) - (1.0 - passk_K) ** 2, 0.0)
  var_K = np.zeros(np.shape(between_K))
  for n, count in zip(*np.unique(np.asarray(n_Q, np.int64), return_counts=True)):
    within_K = (passk.unbiased_passk_var(a, b, int(n), np.minimum(ks, n)) if n > 0
                else between_K)
    var_K += count * np.where(ks <= n, within_K, between_K)
  p = discrepancy.shrink(passk_K, Q)
  return np.sqrt(var_K) / (Q + 1) / (p * (1 - p))  # sd of the mean Q/(Q + 1)-scaled by shrink


def measured_share(center_SxK, noise_SxK, num_questions: int, rng) -> np.ndarray:
  """Draws of a task's measured mean pass@k on `num_questions` questions: each draw's expected
  pass@k `center` moved on the empirical-logit scale by its question noise (`question_noise`,
  one normal per entry), mapped back to a share in [0, 1]."""
  Q = num_questions
  p = discrepancy.shrink(center_SxK, Q)
  z = np.log(p) - np.log1p(-p) + noise_SxK * rng.standard_normal(np.shape(center_SxK))
  return np.clip(((Q + 1.0) / (1.0 + np.exp(-z)) - 0.5) / Q, 0.0, 1.0)


def run_backtests(inputs, fit_results, posts: dict, fitted_range: dict, cfg,
                  log: Callable[[str], None] = lambda msg: None) -> dict:
  """Every law's backtest points and discrepancy scale: {law: {"scale": {...}, "points": [...],
  "folds": [labels], "skipped": {label: why}}}. The scale holds s0, s1, num_points per task
  (`LOSS` for Chinchilla) and the full fit's range (logs of its largest D/N and 6ND), against
  which the planner measures distances."""
  runners = {}
  if "chinchilla" in posts:
    runners["chinchilla"] = _chinchilla(inputs.losses, posts)
  if any(name.startswith("approach1/") for name in posts):
    runners["approach1"] = _approach1(fit_results, posts, cfg)
  if "approach2" in posts:
    runners["approach2"] = _approach2(fit_results, inputs.floors, cfg)
  if inputs.losses is not None:
    models_N, models_D = inputs.losses.fit_rows().N, inputs.losses.fit_rows().D
  else:
    models_N, models_D = fit_results.N, fit_results.D
  pairs = np.unique(np.stack([models_N, models_D], axis=1), axis=0)
  full = discrepancy.range_from_bounds(*(fitted_range[k] for k in (
      "tokens_per_param_min", "tokens_per_param_max", "compute_min", "compute_max")))
  out = {}
  for law, run in runners.items():
    points, labels, skipped = [], [], {}
    for kind, label, train_M in folds(pairs[:, 0], pairs[:, 1]):
      train_set = {(float(n), float(d)) for n, d in pairs[train_M]}
      train_of = lambda N, D, s=train_set: np.array([(float(n), float(d)) in s for n, d in zip(N, D)])
      try:
        with np.errstate(over="ignore"):  # refits on few rows try starts that overflow
          new = run(label, train_of)
      except ValueError as e:  # a fold too small for this law's refit
        skipped[label] = str(e).splitlines()[0]
        continue
      if not new:
        skipped[label] = "the refit gave no finite prediction"
        continue
      labels.append(label)
      points += new
    groups = sorted({p.get("task", LOSS) for p in points}) or [LOSS]
    keys = ("error", "tpp_excess", "compute_excess", "tpp_span", "compute_span")
    law_fit = discrepancy.fit_law_scale(
        {g: [[p[key] for p in points if p.get("task", LOSS) == g] for key in keys]
         + [[known_sd(p) for p in points if p.get("task", LOSS) == g]] for g in groups})
    rho, fits = law_fit["rho"], law_fit["fits"]
    for p in points:  # each point's distance under the fitted ρ (the report plots error against it)
      p["distance"] = float(discrepancy.scaled(p["tpp_excess"], p["compute_excess"], p["tpp_span"],
                                               p["compute_span"], rho))
    scale = {key: {g: f[key] for g, f in fits.items()} for key in ("s0", "s1", "num_points")}
    out[law] = {"scale": dict(scale, rho=rho, **full), "points": points, "folds": labels,
                "skipped": skipped}
    log(f"backtest {law}: {len(labels)} folds, {len(points)} points; discrepancy sd s0 + s1·d, "
        f"d in fitted spans^{rho:g} ({discrepancy.SCALES[law]} scale): " + ", ".join(
            f"{g} {f['s0']:.3f} + {f['s1']:.3f}·d" for g, f in fits.items()))
  return out
