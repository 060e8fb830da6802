"""Answer extraction shared by the verifiers.

Every extractor reads the first non-empty line of a completion (leading whitespace and blank lines
are skipped; later lines are ignored) and forgives formatting slips: surrounding whitespace, letter
case, trailing punctuation, and trailing text once the answer is delimited. It returns None when no
answer can be read, which every verifier counts as wrong.
"""

import decimal
import re
import unicodedata
from typing import Sequence

LETTERS = "ABCDEFGH"
_TRAILING_PUNCT = ".,;:!?"
_PHRASE_END = re.compile(r"[.,;!?]")
_INT = re.compile(r"[+-]?\d+")
_POINT = re.compile(r"\(?\s*([+-]?\d+)\s*,\s*([+-]?\d+)\s*\)?(?=$|[\s.,;:!?])")
_LETTER = re.compile(r"[(\[]?([A-Za-z])([)\]]?)(.*)$")
_NUMBER = re.compile(r"[-+]?\$?\s*\d[\d,]*(?:\.\d+)?")
# Words of an answer text: a number with its sign and separators ("-3", "1.5", "3/4"), or a run of
# letters and digits; anything else (punctuation, whitespace) only separates words.
_ANSWER_WORD = re.compile(r"[-+]?\d+(?:[.,/:]\d+)*|\w+")
_ARTICLES = frozenset(("a", "an", "the"))
_CLAUSE_END = re.compile(r"[.,;:!?](?=\s|$)")


def first_line(completion: str) -> str:
  """The first non-empty line, stripped."""
  return completion.lstrip().split("\n", 1)[0].strip()


def normalize(text: str) -> str:
  """Case-folded, whitespace collapsed, trailing punctuation removed."""
  return " ".join(text.casefold().split()).rstrip(_TRAILING_PUNCT).rstrip()


def normalize_answer(text: str) -> str:
  """An answer text for matching: case-folded, punctuation and the articles "a", "an", "the"
  dropped, whitespace collapsed; signs and separators inside numbers are kept, so "-3" != "3" and
  "1.5" != "15". An answer that is only an article keeps it ("A" stays "a")."""
  words = _ANSWER_WORD.findall(text.casefold())
  return " ".join(w for w in words if w not in _ARTICLES) or " ".join(words)


def matches_answer(completion: str, answer: str) -> bool:
  """Whether the first line of `completion`, or its text up to a punctuation mark that ends a
  clause ("mitochondria, which ..."), equals `answer` once both are `normalize_answer`ed."""
  gold = normalize_answer(answer)
  if not gold:
    return False
  line = first_line(completion)
  ends = [m.start() for m in _CLAUSE_END.finditer(line)] + [len(line)]
  return any(normalize_answer(line[:end]) == gold for end in ends)


def strip_punctuation(word: str) -> str:
  """`word` without leading and trailing Unicode punctuation ("“Holt," gives "Holt")."""
  start, end = 0, len(word)
  while start < end and unicodedata.category(word[start]).startswith("P"):
    start += 1
  while end > start and unicodedata.category(word[end - 1]).startswith("P"):
    end -= 1
  return word[start:end]


def first_word(completion: str) -> str:
  """The first whitespace-separated word of the completion's first line, punctuation stripped."""
  words = first_line(completion).split(maxsplit=1)
  return strip_punctuation(words[0]) if words else ""


def parse_int(completion: str) -> int | None:
  """The integer that starts the answer: "6", " 6.", "6 apples" give 6; "6.5", "x6" give None."""
  words = first_line(completion).split(maxsplit=1)
  if not words:
    return None
  word = words[0].rstrip(_TRAILING_PUNCT)
  return int(word) if _INT.fullmatch(word) else None


def parse_point(completion: str) -> tuple[int, int] | None:
  """A grid point "(x,y)" (spaces and missing parentheses forgiven) that starts the answer."""
  m = _POINT.match(first_line(completion))
  return (int(m.group(1)), int(m.group(2))) if m else None


def parse_phrase(completion: str) -> str:
  """The answer phrase: the first line up to the first sentence punctuation, normalized."""
  return normalize(_PHRASE_END.split(first_line(completion), 1)[0])


def _starts_with_phrase(line: str, phrase: str) -> bool:
  return bool(phrase) and line.startswith(phrase) and (
      len(line) == len(phrase) or not line[len(phrase)].isalnum())


def choice_indices(completion: str, choices: Sequence[str]) -> set[int]:
  """Indices of the choices a completion names, by letter or by text; empty when none.

  In order: a bare letter ("B", "(b)", "B."); the exact text of a choice; a letter closed by
  punctuation and followed by text ("B. lions", "(B) lions"); the longest choice text the line
  starts with ("a marsh, because"); an upper-case letter followed by text ("B lions"). Letters
  beyond the number of choices name nothing. Choices with identical text are named together.
  """
  line = first_line(completion)
  m = _LETTER.match(line)
  letter = closer = rest = None
  if m:
    letter, closer, rest = m.group(1), m.group(2), m.group(3)
  if m and rest.strip(_TRAILING_PUNCT + ")") == "":
    return _letter_index(letter, choices)
  texts = [normalize(c) for c in choices]
  said = normalize(line)
  exact = {i for i, t in enumerate(texts) if t and t == said}
  if exact:
    return exact
  if m and (rest[0] in _TRAILING_PUNCT + ")" or (closer and rest[0].isspace())):
    return _letter_index(letter, choices)
  lowered = " ".join(line.casefold().split())
  prefixes = [(len(t), i) for i, t in enumerate(texts) if _starts_with_phrase(lowered, t)]
  if prefixes:
    longest = max(prefixes)[0]
    return {i for n, i in prefixes if n == longest}
  if m and letter.isupper() and rest[0].isspace():
    return _letter_index(letter, choices)
  return set()


def _letter_index(letter: str, choices: Sequence[str]) -> set[int]:
  i = LETTERS.find(letter.upper())
  return {i} if 0 <= i < len(choices) else set()


def parse_decimal(text: str) -> decimal.Decimal | None:
  """A number such as "18", "-3", "$1,250", "2.50" (commas, "$" and a trailing "." dropped)."""
  m = _NUMBER.search(text)
  if not m:
    return None
  digits = re.sub(r"[$,\s]", "", m.group(0))
  try:
    return decimal.Decimal(digits)
  except decimal.InvalidOperation:
    return None


def gsm8k_final_answer(text: str) -> decimal.Decimal | None:
  """The number after the first "####" (GSM8K's final-answer marker); None without a marker."""
  marker = text.find("####")
  if marker < 0:
    return None
  return parse_decimal(first_line(text[marker + 4:]))
