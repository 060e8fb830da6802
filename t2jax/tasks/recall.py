"""Knowledge recall about synthetic people: "Q: where does Tovin Maro live? A:" -> " Ruska".

Design (after the "mixed training" setting of Allen-Zhu & Li, Physics of Language Models 3.1):
- A world of `num_entities` people with made-up names, each with one value per attribute (home
  town, job, pet, favourite colour), all drawn from `world_seed`.
- Every person's facts appear in training documents as biographies: the facts in random order,
  each in one of several statement phrasings.
- The people are split once (`split_seed`): for the train people, question/answer lines in the
  question phrasing also appear in training, so a model learns the question format and that it
  is answered from the biographies; for the eval people the questions appear only in the eval set.
  Answering them needs recall of facts seen only as statements, in a phrasing never trained on.
- `train_documents` mixes biographies of everyone with question documents of train people
  (`qa_fraction` of documents). Eval questions are the (person, attribute) pairs of the eval people,
  shuffled by `eval_seed`.
"""

from typing import Iterator

import ml_collections

from t2jax.tasks import base, verifiers

ATTRIBUTES = {
    "city": ("Tarn", "Velo", "Ruska", "Mirrow", "Ostel", "Brint", "Caldo", "Fennic", "Jorvik",
             "Pellam", "Quorra", "Sundby"),
    "job": ("baker", "farmer", "sailor", "doctor", "miner", "painter", "tailor", "smith",
            "teacher", "fisher", "guard", "clerk"),
    "pet": ("cat", "dog", "horse", "parrot", "goat", "rabbit", "hen", "turtle", "pig", "fox",
            "crow", "mule"),
    "color": ("red", "blue", "green", "yellow", "black", "white", "purple", "orange", "brown",
              "grey", "pink", "gold"),
}
STATEMENTS = {
    "city": ("{n} lives in {v}.", "{n}'s home town is {v}.", "{v} is the home of {n}."),
    "job": ("{n} works as a {v}.", "{n} earns a living as a {v}.", "By trade, {n} is a {v}."),
    "pet": ("{n} keeps a {v}.", "{n} owns a pet {v}.", "A {v} lives with {n}."),
    "color": ("{n} likes {v} best.", "The favourite colour of {n} is {v}.",
              "{n} loves the colour {v}."),
}
QUESTIONS = {
    "city": "Q: where does {n} live? A:",
    "job": "Q: what is {n}'s job? A:",
    "pet": "Q: what pet does {n} have? A:",
    "color": "Q: what colour does {n} like? A:",
}
_ONSETS = ("b", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z")
_VOWELS = ("a", "e", "i", "o", "u")
_CODAS = ("", "n", "r", "l", "s", "k", "m", "d")


def default_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      num_entities=250,          # people in the world
      eval_fraction=0.5,         # share of people whose questions are held out
      num_eval=500,              # eval questions (at most 4 per eval person)
      world_seed=0,              # names and attribute values
      split_seed=0,              # which people are held out
      eval_seed=0,               # order of the eval questions
      qa_fraction=0.5,           # share of training documents that are question documents
      problems_per_document=4,   # question lines per question document
  ))


def _word(rng: base.Rng) -> str:
  """A two-syllable made-up word such as "Tovin" or "Mare"."""
  return (rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_ONSETS) + rng.choice(_VOWELS)
          + rng.choice(_CODAS)).capitalize()


def make_world(num_entities: int, seed: int) -> list[tuple[str, dict[str, str]]]:
  """`num_entities` (name, {attribute: value}) pairs with distinct two-word names."""
  rng = base.Rng("recall", "world", seed)
  people, names = [], set()
  while len(people) < num_entities:
    name = _word(rng) + " " + _word(rng)
    if name in names:
      continue
    names.add(name)
    people.append((name, {a: rng.choice(values) for a, values in ATTRIBUTES.items()}))
  return people


class Recall(base.Task):
  name = "recall"
  num_choices = 0
  guessable = False
  stop_strings = ("\n",)
  max_new_tokens = 6

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.cfg = cfg = base.knobs(config)
    for field in ("num_entities", "num_eval", "problems_per_document"):
      value = getattr(cfg, field)
      if not isinstance(value, int) or value < 1:
        raise ValueError(f"tasks.recall.{field}={value!r}: must be a positive integer")
    for field in ("eval_fraction", "qa_fraction"):
      if not 0.0 < getattr(cfg, field) < 1.0:
        raise ValueError(f"tasks.recall.{field}={getattr(cfg, field)!r}: must lie in (0, 1)")
    self.world = make_world(cfg.num_entities, cfg.world_seed)
    order = base.Rng("recall", "split", cfg.split_seed).shuffled(range(len(self.world)))
    num_held_out = round(cfg.eval_fraction * len(self.world))
    if not 0 < num_held_out < len(self.world):
      raise ValueError(f"tasks.recall.eval_fraction={cfg.eval_fraction} of num_entities="
                       f"{cfg.num_entities} leaves no train or no eval people; change either")
    self.eval_people = sorted(order[:num_held_out])
    self.train_people = sorted(order[num_held_out:])
    capacity = len(self.eval_people) * len(ATTRIBUTES)
    if cfg.num_eval > capacity:
      raise ValueError(f"tasks.recall.num_eval={cfg.num_eval}: the {len(self.eval_people)} eval "
                       f"people give only {capacity} questions; raise num_entities or "
                       f"eval_fraction, or lower num_eval")

  def _question(self, person: int, attribute: str) -> base.Question:
    name, values = self.world[person]
    return base.Question(id=f"{name}/{attribute}", prompt=QUESTIONS[attribute].format(n=name),
                         answer=" " + values[attribute])

  def questions(self, split: str = "eval", limit: int | None = None) -> list[base.Question]:
    """Eval: `num_eval` questions about the held-out people. Train: every question about the train
    people (those that appear in training documents), in the same shuffled order."""
    base.check_split(self.name, split)
    base.check_limit(self.name, limit)
    people = self.eval_people if split == "eval" else self.train_people
    pairs = [(p, a) for p in people for a in ATTRIBUTES]
    pairs = base.Rng("recall", "questions", split, self.cfg.eval_seed).shuffled(pairs)
    if split == "eval":
      pairs = pairs[:self.cfg.num_eval]
    return [self._question(p, a) for p, a in pairs[:limit]]

  def biography(self, person: int, rng: base.Rng) -> str:
    name, values = self.world[person]
    facts = [rng.choice(STATEMENTS[a]).format(n=name, v=values[a]) for a in ATTRIBUTES]
    return " ".join(rng.shuffled(facts)) + "\n"

  def train_documents(self, seed: int) -> Iterator[str]:
    """Endless biographies of all people and question documents about the train people."""
    rng = base.Rng(self.name, "train_documents", seed)
    attributes = tuple(ATTRIBUTES)
    while True:
      if rng.uniform() < self.cfg.qa_fraction:
        lines = []
        for _ in range(self.cfg.problems_per_document):
          q = self._question(rng.choice(self.train_people), rng.choice(attributes))
          lines.append(q.prompt + q.answer + "\n")
        yield "".join(lines)
      else:
        yield self.biography(rng.below(len(self.world)), rng)

  def verify(self, question: base.Question, completion: str) -> bool:
    """The completion's first phrase (up to a newline or ".,;!?") equals the value, any case."""
    return verifiers.parse_phrase(completion) == verifiers.normalize(question.answer)
