"""Fit-speed benchmark of the scaling-law core.

(a) Chinchilla Approach 3: the batched, jitted L-BFGS over the full 4,500-start Hoffmann grid on
    240 simulated ladder points (timed cold, compile included, and warm), against a plain
    `scipy.optimize.minimize(L-BFGS-B)` loop over starts (a subset timed, extrapolated to 4,500).
(b) Approach 2 NUTS on 100 checkpoints × 8 tasks × 500 questions (n = 64 samples each), 2 chains
    on 2 CPU devices: the aggregated-count likelihood (`approach2.model`), full 500 warmup + 500
    samples as `python -m t2jax.fit` runs it, against the same model with one `dist.BetaBinomial`
    term per row. The per-row model is ~400x slower per gradient, so its full run would take hours;
    both models instead draw the same NUTS samples from one adapted state (the aggregated model's
    step size, dense mass matrix and position after its warm-up; same keys, so the same
    trajectories up to rounding), stepping the jitted kernel after compiling it: seconds per draw
    and per leapfrog step, measured in NUTS itself.

Run: /tmp/venv/bin/python benchmarks/fit_speed.py [--quick]
Writes benchmarks/results/fit_speed.{json,md}.
"""

import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # fair scipy baseline: no BLAS thread contention

import numpyro

numpyro.set_host_device_count(2)

import argparse
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import scipy.optimize
from numpyro import infer
from numpyro.infer import util as infer_util

from t2jax import io
from t2jax.laws import approach2, chinchilla, optim, posterior, simulate, table

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def machine() -> dict:
  cpu = platform.processor() or platform.machine()
  if os.path.exists("/proc/cpuinfo"):
    with open("/proc/cpuinfo") as f:
      names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    cpu = names[0] if names else cpu
  return {"cpu": cpu, "cpu_count": os.cpu_count(), "load_average_1_5_15": list(os.getloadavg()),
          "python": platform.python_version(), "jax": jax.__version__,
          "numpyro": numpyro.__version__, "jax_devices": len(jax.devices())}


# ------------------------------------------------------------------------------- (a) Approach 3

def _numpy_objective(theta, logN, logD, logy, delta):
  """Huber on log residuals of the LSE Chinchilla form, with its analytic gradient (float64)."""
  e, log_A, log_B, alpha, beta = theta
  terms = np.stack([np.full_like(logN, e), log_A - alpha * logN, log_B - beta * logD])
  top = terms.max(axis=0)
  weights = np.exp(terms - top)
  lse = top + np.log(weights.sum(axis=0))
  r = logy - lse
  absr = np.abs(r)
  value = np.mean(np.where(absr <= delta, 0.5 * r * r, delta * (absr - 0.5 * delta)))
  dr = -np.clip(r, -delta, delta) / len(r)  # d value / d lse
  soft = weights / weights.sum(axis=0)
  grad = np.array([np.sum(dr * soft[0]), np.sum(dr * soft[1]), np.sum(dr * soft[2]),
                   np.sum(dr * soft[1] * -logN), np.sum(dr * soft[2] * -logD)])
  return value, grad


def bench_approach3(num_scipy_starts: int) -> dict:
  N, D = simulate.ladder()
  loss = simulate.chinchilla_losses(N, D, seed=0)
  t0 = time.perf_counter()
  fit = chinchilla.fit(N, D, loss)
  cold_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  chinchilla.fit(N, D, loss)
  warm_s = time.perf_counter() - t0

  starts = optim.grid_starts(chinchilla.HOFFMANN_GRID, ("e", "log_A", "log_B", "alpha", "beta"))
  subset = np.linspace(0, len(starts) - 1, num_scipy_starts).round().astype(int)
  args = (np.log(N), np.log(D), np.log(loss), 1e-3)
  best = np.inf
  t0 = time.perf_counter()
  for i in subset:
    res = scipy.optimize.minimize(_numpy_objective, starts[i], args=args, jac=True,
                                  method="L-BFGS-B")
    best = min(best, float(res.fun))
  subset_s = time.perf_counter() - t0
  scipy_full_s = subset_s * len(starts) / len(subset)
  return {
      "num_points": len(N), "num_starts": len(starts), "batched_cold_s": cold_s,
      "batched_warm_s": warm_s, "batched_objective": fit.objective,
      "batched_params": fit.params, "scipy_starts_timed": len(subset), "scipy_subset_s": subset_s,
      "scipy_extrapolated_s": scipy_full_s, "scipy_subset_best_objective": best,
      "speedup_cold": scipy_full_s / cold_s}


# ------------------------------------------------------------------------------- (b) Approach 2

def per_row_model(data, group_R, n_R, c_R):
  """`approach2.model` with the accuracy likelihood as one BetaBinomial term per results row."""
  z = approach2.sample_sites(data)
  loss_G, a_G, b_G = approach2.group_beta(z, data)
  numpyro.factor("loss_ll", approach2.loss_log_likelihood(z, data, loss_G, a_G, b_G))
  numpyro.sample("c", dist.BetaBinomial(a_G[group_R], b_G[group_R], total_count=n_R), obs=c_R)


def _time_nuts(model, init, data, *, warmup, samples, **kwargs):
  t0 = time.perf_counter()
  post = posterior.sample_nuts(model, init, lambda z: approach2.to_params(z, data), num_chains=2,
                               num_warmup=warmup, num_samples=samples, seed=0, data=data, **kwargs)
  return time.perf_counter() - t0, post


def _adapted_state(init, data, *, warmup):
  """The aggregated model's NUTS state (one chain from `init`) after `warmup` adaptation steps."""
  with jax.enable_x64(True):
    init = {k: np.asarray(v, np.float64) for k, v in init.items()}
    kernel = infer.NUTS(approach2.model, dense_mass=True, target_accept_prob=0.95,
                        init_strategy=infer.init_to_value(values=init))  # sites are unconstrained
    mcmc = infer.MCMC(kernel, num_warmup=warmup, num_samples=2, progress_bar=False)
    mcmc.warmup(jax.random.key(0), init_params=init, data=data)
    return mcmc.post_warmup_state


def _draw_seconds(model, state, draws, **kwargs) -> dict:
  """Seconds per NUTS draw (and per leapfrog step) of `model`, stepping the kernel `draws` times
  from the adapted `state` with no further adaptation; the jitted step is compiled first."""
  with jax.enable_x64(True):
    kernel = infer.NUTS(model, dense_mass=True, target_accept_prob=0.95,  # sites are unconstrained
                        init_strategy=infer.init_to_value(values=state.z))
    kernel.init(jax.random.key(1), 0, state.z, model_args=(), model_kwargs=kwargs)
    step = jax.jit(lambda s: kernel.sample(s, (), kwargs))
    jax.block_until_ready(step(state))  # compile
    steps, t0 = 0, time.perf_counter()
    for _ in range(draws):
      state = jax.block_until_ready(step(state))
      steps += int(state.num_steps)
    seconds = time.perf_counter() - t0
  return {"draws": draws, "seconds": seconds, "leapfrog_steps": steps,
          "s_per_draw": seconds / draws, "ms_per_leapfrog": 1e3 * seconds / steps}


def _eval_ms(model, init, repeats=20, **kwargs):
  """Milliseconds per jitted value-and-gradient of the log density (after compile)."""
  with jax.enable_x64(True):
    z = {k: jnp.asarray(v) for k, v in init.items()}
    f = jax.jit(jax.value_and_grad(lambda z: infer_util.log_density(model, (), kwargs, z)[0]))
    value = float(jax.block_until_ready(f(z))[0])
    t0 = time.perf_counter()
    for _ in range(repeats):
      jax.block_until_ready(f(z))
    return 1e3 * (time.perf_counter() - t0) / repeats, value


def bench_approach2(*, num_tasks, num_sizes, num_ratios, num_questions, n, warmup, samples,
                    draws) -> dict:
  N, D = simulate.ladder(num_sizes=num_sizes, num_ratios=num_ratios)
  tasks = simulate.approach2_task_suite(num_tasks)
  rows = simulate.approach2_rows(N, D, tasks=tasks, num_questions=num_questions, n=n)
  results = table.results_from_rows(sorted(rows[0]), rows, "simulated")
  floors = {name: p["floor"] for name, p in tasks.items()}
  data = approach2.prepare(results, floors=floors)
  t0 = time.perf_counter()
  init = approach2.map_sites(data)
  map_s = time.perf_counter() - t0
  print(f"(b) {len(results)} rows -> {len(data.n_K)} entries; MAP {map_s:.1f}s", flush=True)

  with jax.enable_x64(True):
    row_args = dict(group_R=jnp.asarray(approach2.row_groups(results)),
                    n_R=jnp.asarray(results.n, jnp.float64), c_R=jnp.asarray(results.c, jnp.float64))
  agg_ms, agg_value = _eval_ms(approach2.model, init, data=data)
  row_ms, row_value = _eval_ms(per_row_model, init, data=data, **row_args)
  print(f"(b) grad eval {agg_ms:.2f} ms aggregated, {row_ms:.2f} ms per row", flush=True)

  agg_s, post = _time_nuts(approach2.model, init, data, warmup=warmup, samples=samples)
  print(f"(b) NUTS aggregated {agg_s:.1f}s", flush=True)
  state = _adapted_state(init, data, warmup=warmup)
  matched = {"aggregated": _draw_seconds(approach2.model, state, draws, data=data),
             "per_row": _draw_seconds(per_row_model, state, draws, data=data, **row_args)}
  print(f"(b) matched draws: {matched}", flush=True)
  speedup = matched["per_row"]["s_per_draw"] / matched["aggregated"]["s_per_draw"]
  checks = post.convergence()
  return {
      "models": len(N), "tasks": num_tasks, "questions": num_questions, "n": n,
      "rows": len(results), "aggregated_entries": len(data.n_K), "chains": 2,
      "warmup": warmup, "samples": samples, "map_s": map_s,
      "log_density": [agg_value, row_value],
      "log_density_equal": bool(np.isclose(agg_value, row_value, rtol=1e-6)),
      "grad_eval_ms_aggregated": agg_ms, "grad_eval_ms_per_row": row_ms,
      "nuts_aggregated_s": agg_s, "matched": matched,
      "speedup": speedup, "num_divergences": post.num_divergences,
      "converged": checks["converged"], "problems": checks["problems"]}


def markdown(report: dict) -> str:
  a, b, m = report["approach3"], report["approach2"], report["machine"]
  return "\n".join([
      "# Fit speed", "",
      f"Machine: {m['cpu']}, {m['cpu_count']} CPU cores, load average (1/5/15 min) at start "
      f"{m['load_average_1_5_15_start']}, at end {m['load_average_1_5_15']}; python {m['python']}, "
      f"jax {m['jax']}, numpyro {m['numpyro']}. The machine is shared, so times are noisy.", "",
      f"## (a) Approach 3: {a['num_starts']} starts on {a['num_points']} points", "",
      "| method | time (s) |", "|---|---|",
      f"| batched jitted L-BFGS, cold (compile included) | {a['batched_cold_s']:.2f} |",
      f"| batched jitted L-BFGS, warm | {a['batched_warm_s']:.2f} |",
      f"| scipy L-BFGS-B loop, {a['scipy_starts_timed']} starts timed | {a['scipy_subset_s']:.2f} |",
      f"| scipy L-BFGS-B loop, extrapolated to {a['num_starts']} starts | "
      f"{a['scipy_extrapolated_s']:.1f} |", "",
      f"Speedup (cold batched vs extrapolated scipy): {a['speedup_cold']:.1f}x. Best objective: "
      f"batched {a['batched_objective']:.4e}, scipy subset {a['scipy_subset_best_objective']:.4e}.",
      "",
      f"## (b) Approach 2 NUTS: {b['models']} models × {b['tasks']} tasks × {b['questions']} "
      f"questions (n = {b['n']})", "",
      f"{b['rows']} rows aggregate to {b['aggregated_entries']} (group, n, c) entries; "
      f"{b['chains']} chains, {b['warmup']} warmup + {b['samples']} samples each; MAP warm start "
      f"{b['map_s']:.1f} s (not included below). Log densities at the MAP {b['log_density'][0]:.6f} "
      f"(aggregated) and {b['log_density'][1]:.6f} (per row): equal to 1e-6 relative "
      f"({b['log_density_equal']}; numpyro's `betaln` rounds at about that level).",
      "", f"Full run, aggregated counts: {b['nuts_aggregated_s']:.1f} s "
      f"({b['num_divergences']} divergences, converged: {b['converged']} {b['problems'] or ''}).",
      "", f"Matched NUTS draws: {b['matched']['aggregated']['draws']} draws of one chain from one "
      "adapted state (same keys, so the same trajectories up to rounding), compile excluded:", "",
      "| likelihood | grad eval (ms) | s per draw | leapfrog steps | ms per leapfrog |",
      "|---|---|---|---|---|",
      *(f"| {label} | {b[f'grad_eval_ms_{name}']:.2f} | {b['matched'][name]['s_per_draw']:.3f} | "
        f"{b['matched'][name]['leapfrog_steps']} | {b['matched'][name]['ms_per_leapfrog']:.2f} |"
        for label, name in (("aggregated counts", "aggregated"),
                            ("BetaBinomial per row", "per_row"))), "",
      f"Speedup of the aggregated likelihood per NUTS draw: {b['speedup']:.0f}x. At that rate the "
      f"per-row model's full {b['warmup']} + {b['samples']} run would take about "
      f"{b['nuts_aggregated_s'] * b['speedup'] / 60:.0f} min.", ""])


def main(argv):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="tiny settings, for a smoke run")
  args = parser.parse_args(argv)
  load_start = list(os.getloadavg())
  a = bench_approach3(num_scipy_starts=20 if args.quick else 100)
  print(f"(a) batched cold {a['batched_cold_s']:.2f}s warm {a['batched_warm_s']:.2f}s | scipy "
        f"{a['scipy_starts_timed']} starts {a['scipy_subset_s']:.2f}s -> "
        f"{a['scipy_extrapolated_s']:.1f}s for {a['num_starts']}", flush=True)
  if args.quick:
    b = bench_approach2(num_tasks=2, num_sizes=4, num_ratios=4, num_questions=100, n=16,
                        warmup=20, samples=20, draws=3)
  else:
    b = bench_approach2(num_tasks=8, num_sizes=10, num_ratios=10, num_questions=500, n=64,
                        warmup=500, samples=500, draws=5)
  report = {"machine": {**machine(), "load_average_1_5_15_start": load_start},
            "approach3": a, "approach2": b}
  text = markdown(report)
  print(text)
  if not args.quick:
    io.write_json(os.path.join(RESULTS_DIR, "fit_speed.json"), report)
    io.write_text(os.path.join(RESULTS_DIR, "fit_speed.md"), text)


if __name__ == "__main__":
  main(sys.argv[1:])
