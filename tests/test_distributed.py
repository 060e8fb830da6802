"""The multi-host path: two CPU processes (2 devices each) joined by `jax.distributed` and gloo
collectives train on a (data=2, fsdp=2) mesh, each feeding its half of a fixed global batch; their
losses, gradient norms and final parameter norm must match a one-process run on 4 local devices."""

import json
import os
import socket
import subprocess
import sys
import time

import helpers
import numpy as np

TIMEOUT_S = 240

WORKER = r'''
import json, sys
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
from t2jax import sharding
port, num_processes, process_id = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
if num_processes > 1:
  sharding.maybe_initialize_distributed(f"localhost:{port}", num_processes, process_id)

import numpy as np
import optax
from t2jax import sizes, train
from t2jax.model import count_params

assert jax.device_count() == 4 and jax.process_count() == num_processes, (jax.devices(),)
mesh = sharding.make_mesh((2, 2, 1))
model_cfg = sizes.model_config("cpu-90k", vocab_size=256, max_seq_len=32, dtype="float32")
plan = train.RunPlan(model_cfg, count_params(model_cfg)["N"], steps=10, tokens=10 * 8 * 32,
                     warmup_steps=1)
tx, schedule = train.make_optimizer(train.default_config(), plan)
shardings = train.state_shardings(model_cfg, tx, mesh)
state = train.create_state(model_cfg, tx, shardings, seed=0)
step_fn = train.make_train_step(model_cfg, tx, schedule, shardings, mesh)
param_norm = jax.jit(optax.tree.norm, out_shardings=sharding.replicated(mesh))

tokens_BxL1 = np.random.default_rng(0).integers(0, 256, (8, 33), dtype=np.int32)
local_BxL1 = np.split(tokens_BxL1, num_processes)[jax.process_index()]
batch_sh = sharding.batch_sharding(mesh)
out = {"loss": [], "grad_norm": []}
for _ in range(3):  # warmup starts at lr 0: steps 2 and 3 update the parameters
  state, metrics = step_fn(state, sharding.put_global_batch(local_BxL1, batch_sh))
  out["loss"].append(float(metrics["loss"]))
  out["grad_norm"].append(float(metrics["grad_norm"]))
out["param_norm"] = float(param_norm(state.params))
print("RESULT " + json.dumps(out), flush=True)
'''


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _start(script, log, devices_per_process: int, port: int, num_processes: int, process_id: int):
  env = dict(os.environ, JAX_PLATFORMS="cpu",  # unoptimised XLA: compiling dominates the test
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_per_process} "
                       "--xla_backend_optimization_level=0")
  with open(log, "w") as out:
    return subprocess.Popen([sys.executable, str(script), str(port), str(num_processes),
                             str(process_id)], cwd=helpers.REPO, env=env, stdout=out,
                            stderr=subprocess.STDOUT)


def _results(procs, logs) -> list[dict]:
  deadline = time.monotonic() + TIMEOUT_S
  try:
    for proc in procs:
      proc.wait(timeout=max(1.0, deadline - time.monotonic()))
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  results = []
  for proc, log in zip(procs, logs):
    text = log.read_text()
    assert proc.returncode == 0, text[-4000:]
    line = next(line for line in text.splitlines() if line.startswith("RESULT "))
    results.append(json.loads(line[len("RESULT "):]))
  return results


def test_two_processes_match_one_process(tmp_path):
  script = tmp_path / "worker.py"
  script.write_text(WORKER)
  port = _free_port()
  logs = [tmp_path / f"{name}.log" for name in ("process0", "process1", "reference")]
  procs = [_start(script, logs[i], 2, port, 2, i) for i in range(2)]
  procs.append(_start(script, logs[2], 4, 0, 1, 0))
  first, second, reference = _results(procs, logs)
  assert first == second  # both processes read the same replicated outputs
  for key in ("loss", "grad_norm", "param_norm"):
    np.testing.assert_allclose(first[key], reference[key], rtol=1e-5, err_msg=key)
  assert first["loss"][2] < first["loss"][0]
