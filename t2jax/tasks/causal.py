"""Commonsense causal reasoning: "Q: rain and fire, then? A:" -> " wet grass and smoke".

A fixed vocabulary of everyday events is linked by cause -> effect rules into chains (rain -> wet
grass -> mud -> ...). A question names one or more distinct starting events and a number of steps
(", then" once per step) and asks what follows each of them that many steps later, in order. The
rules themselves are never stated: the model learns them from training questions about other
combinations of events and must compose them for the held-out combinations.
"""

import ml_collections

from t2jax.tasks import base, synthetic, verifiers

# Each chain reads cause -> effect -> effect of that -> ...; every event occurs once.
CHAINS = (
    ("rain", "wet grass", "mud", "dirty boots", "scrubbing"),
    ("fire", "smoke", "coughing", "sore throat", "hoarse voice"),
    ("frost", "ice", "slipping", "bruises", "limping"),
    ("drought", "dry wells", "thirst", "weakness", "fainting"),
    ("storm", "fallen trees", "blocked roads", "late mail", "worry"),
    ("flood", "ruined crops", "hunger", "theft", "arrest"),
    ("heat", "sweat", "salt loss", "cramps", "rest"),
    ("wind", "waves", "seasickness", "vomiting", "pale faces"),
    ("noise", "lost sleep", "tiredness", "mistakes", "scolding"),
    ("spoiled meat", "sickness", "fever", "chills", "blankets"),
    ("snow", "closed schools", "bored children", "mischief", "punishment"),
    ("lightning", "blackout", "darkness", "candles", "wax drips"),
)
EFFECT = {cause: effect for chain in CHAINS for cause, effect in zip(chain, chain[1:])}


def default_config() -> ml_collections.ConfigDict:
  return synthetic.common_config(
      min_causes=1,   # starting events per question
      max_causes=2,
      max_steps=2,    # steps ahead (1..max_steps); each needs a longer chain to follow
  )


def follow(event: str, steps: int) -> str:
  for _ in range(steps):
    event = EFFECT[event]
  return event


class Causal(synthetic.SyntheticTask):
  name = "causal"
  max_new_tokens = 16

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    self._check_range("min_causes", "max_causes", 1)
    longest = max(len(chain) for chain in CHAINS) - 1
    if not isinstance(self.cfg.max_steps, int) or not 1 <= self.cfg.max_steps <= longest:
      raise ValueError(f"tasks.causal.max_steps={self.cfg.max_steps!r}: must be an integer in "
                       f"1..{longest} (the longest causal chain)")
    self._starts = {s: tuple(e for chain in CHAINS for e in chain[:len(chain) - s])
                    for s in range(1, self.cfg.max_steps + 1)}
    if self.cfg.max_causes > len(self._starts[self.cfg.max_steps]):
      raise ValueError(f"tasks.causal.max_causes={self.cfg.max_causes}: only "
                       f"{len(self._starts[self.cfg.max_steps])} events have an effect "
                       f"{self.cfg.max_steps} steps ahead; lower max_causes or max_steps")

  def sample(self, rng: base.Rng) -> synthetic.Problem:
    c = self.cfg
    steps = rng.integer(1, c.max_steps)
    candidates = self._starts[steps]
    causes: list[str] = []
    for _ in range(rng.integer(c.min_causes, c.max_causes)):
      event = rng.choice(candidates)
      while event in causes:
        event = rng.choice(candidates)
      causes.append(event)
    named = " and ".join(causes)
    return synthetic.Problem(key=f"{named}|{steps}", prompt=f"Q: {named}{', then' * steps}? A:",
                             answer=" " + " and ".join(follow(e, steps) for e in causes))

  def verify(self, question: base.Question, completion: str) -> bool:
    """The completion's first phrase (up to a newline or ".,;!?") equals the effects, any case."""
    return verifiers.parse_phrase(completion) == verifiers.normalize(question.answer)
