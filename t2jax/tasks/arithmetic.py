"""Multi-step arithmetic: "Q: 3+4-1=? A:" -> " 6"."""

import ml_collections

from t2jax.tasks import base, synthetic, verifiers

_OPERATORS = "+-*"


def default_config() -> ml_collections.ConfigDict:
  return synthetic.common_config(
      min_operands=2,   # operands per expression (steps = operands - 1)
      max_operands=3,
      max_value=9,      # operands are drawn from 0..max_value
      operators="+-",   # any of "+-*"; "*" binds tighter, as usual
  )


def evaluate(operands: list[int], operators: str) -> int:
  """Value of operands[0] op operators[0] operands[1] ... with "*" before "+" and "-"."""
  terms, signs = [operands[0]], [1]
  for op, value in zip(operators, operands[1:]):
    if op == "*":
      terms[-1] *= value
    else:
      terms.append(value)
      signs.append(1 if op == "+" else -1)
  return sum(s * t for s, t in zip(signs, terms))


class Arithmetic(synthetic.SyntheticTask):
  name = "arithmetic"
  max_new_tokens = 6

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    self._check_range("min_operands", "max_operands", 2)
    self._check_positive("max_value")
    ops = self.cfg.operators
    if not ops or any(op not in _OPERATORS for op in ops) or len(set(ops)) != len(ops):
      raise ValueError(f"tasks.arithmetic.operators={ops!r}: use distinct characters from "
                       f"{_OPERATORS!r}, e.g. '+-'")

  def sample(self, rng: base.Rng) -> synthetic.Problem:
    c = self.cfg
    n = rng.integer(c.min_operands, c.max_operands)
    operands = [rng.integer(0, c.max_value) for _ in range(n)]
    operators = "".join(rng.choice(c.operators) for _ in range(n - 1))
    expression = str(operands[0]) + "".join(op + str(v) for op, v in zip(operators, operands[1:]))
    return synthetic.Problem(key=expression, prompt=f"Q: {expression}=? A:",
                             answer=f" {evaluate(operands, operators)}")

  def verify(self, question: base.Question, completion: str) -> bool:
    """The completion starts with the correct integer ("6", " 6.", "6 because ..." all count)."""
    return verifiers.parse_int(completion) == int(question.answer)
