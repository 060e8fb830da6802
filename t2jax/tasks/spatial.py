"""Spatial reasoning on a grid: "Q: at (2,3) go up 1, left 2? A:" -> " (0,4)".

x grows to the right and y grows upwards; coordinates run 0..grid_size-1 and every intermediate
position stays on the grid.
"""

import ml_collections

from t2jax.tasks import base, synthetic, verifiers

_MOVES = {"up": (0, 1), "down": (0, -1), "left": (-1, 0), "right": (1, 0)}


def default_config() -> ml_collections.ConfigDict:
  return synthetic.common_config(
      grid_size=10,   # coordinates 0..grid_size-1
      min_moves=1,    # moves per question
      max_moves=2,
      max_step=3,     # each move goes 1..max_step cells
  )


class Spatial(synthetic.SyntheticTask):
  name = "spatial"
  max_new_tokens = 8

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    self._check_range("min_moves", "max_moves", 1)
    self._check_positive("max_step")
    if not isinstance(self.cfg.grid_size, int) or self.cfg.grid_size <= self.cfg.max_step:
      raise ValueError(f"tasks.spatial.grid_size={self.cfg.grid_size!r}: must be an integer larger "
                       f"than max_step={self.cfg.max_step} so every move fits on the grid")

  def sample(self, rng: base.Rng) -> synthetic.Problem:
    c = self.cfg
    x, y = rng.below(c.grid_size), rng.below(c.grid_size)
    start, moves = (x, y), []
    for _ in range(rng.integer(c.min_moves, c.max_moves)):
      while True:  # terminates: with grid_size > max_step a move of 1 always fits one direction
        direction, step = rng.choice(tuple(_MOVES)), rng.integer(1, c.max_step)
        dx, dy = _MOVES[direction]
        nx, ny = x + dx * step, y + dy * step
        if 0 <= nx < c.grid_size and 0 <= ny < c.grid_size:
          break
      x, y = nx, ny
      moves.append(f"{direction} {step}")
    path = ", ".join(moves)
    return synthetic.Problem(key=f"({start[0]},{start[1]}) {path}",
                             prompt=f"Q: at ({start[0]},{start[1]}) go {path}? A:",
                             answer=f" ({x},{y})")

  def verify(self, question: base.Question, completion: str) -> bool:
    """The completion starts with the end point ("(0,4)", "( 0, 4 )", "0,4." all count)."""
    return verifiers.parse_point(completion) == verifiers.parse_point(question.answer)
