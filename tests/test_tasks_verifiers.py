"""Verifiers: right, wrong and malformed completions for every task kind."""

import pytest

from t2jax import tasks
from t2jax.tasks import base, verifiers


def _check(task, question, right, wrong):
  for completion in right:
    assert task.verify(question, completion), f"{completion!r} should be right"
  for completion in wrong:
    assert not task.verify(question, completion), f"{completion!r} should be wrong"


def test_arithmetic_verifier():
  q = base.Question(id="x", prompt="Q: 9-3=? A:", answer=" 6")
  _check(tasks.get_task("arithmetic"), q,
         right=[" 6", "6", "  6  ", "6.", "6,", "6 because 9-3=6", " 6\nQ: 1+1=? A: 2", "\n 6",
                "+6"],
         wrong=[" 7", "-6", "66", "6.5", "60", "", "  \n", "six", "x6", "=6", "\n\n7\n6"])
  neg = base.Question(id="y", prompt="Q: 3-9=? A:", answer=" -6")
  _check(tasks.get_task("arithmetic"), neg, right=[" -6", "-6.", "-6 is it"], wrong=[" 6", "- 6"])


def test_simple_arithmetic_verifier():
  q = base.Question(id="x", prompt="Q: 25-759=? A:", answer=" -734")
  _check(tasks.get_task("simple_arithmetic"), q, right=[" -734", "-734.", " -734 \n"],
         wrong=[" 734", "-7340", "-734.5", "minus 734"])


def test_spatial_verifier():
  q = base.Question(id="x", prompt="Q: at (2,3) go up 1, left 2? A:", answer=" (0,4)")
  _check(tasks.get_task("spatial"), q,
         right=[" (0,4)", "(0, 4)", " ( 0 , 4 ).", "0,4", "(0,4) since", "(0,4\n", "\n(0,4)"],
         wrong=[" (4,0)", "(0,41)", "(0,4)5", "(0;4)", "(0)", "", "up"])


def test_causal_verifier():
  q = base.Question(id="x", prompt="Q: rain and fire, then? A:", answer=" wet grass and smoke")
  _check(tasks.get_task("causal"), q,
         right=[" wet grass and smoke", "Wet Grass and SMOKE.", " wet  grass and smoke \nmud",
                "wet grass and smoke, then mud", "wet grass and smoke!"],
         wrong=[" smoke and wet grass", " wet grass", "wet grass and smoke and mud",
                "mud and smoke", "", " wet grass, and smoke"])


def test_recall_verifier():
  q = base.Question(id="x", prompt="Q: where does Tovin Maro live? A:", answer=" Ruska")
  _check(tasks.get_task("recall"), q, right=[" Ruska", "ruska.", " RUSKA, of course", "Ruska\nQ:"],
         wrong=[" Tarn", "Ruskan", "in Ruska", "", "Ruska Tarn"])


MC = base.Question(
    id="x", answer=" C", choices=("lions", "humans", "bunnies", "grass"),
    prompt="Question: Predators eat\nA. lions\nB. humans\nC. bunnies\nD. grass\nAnswer:")


LETTERS = {"format": "letters"}


def test_multiple_choice_verifier():
  task = tasks.get_task("openbookqa", LETTERS)
  _check(task, MC,
         right=[" C", "C", "c", " (C)", "(c)", "C.", " C)", "[C]", "C:", " C. bunnies",
                "(C) bunnies", "c) bunnies", "C bunnies", " bunnies", "Bunnies.",
                "bunnies, because", "\n  C\n", " C\nQuestion: next"],
         wrong=[" B", "(b)", "b.", " lions", "D. grass", "E", "(F)", "", "  ", "Because",
                "I think C", "Answer: C", "CD", "bunny", "c bunnies"])


def test_multiple_choice_texts_that_look_like_letters():
  choices = ("a marsh", "a tundra", "the plains", "a desert")
  marsh = base.Question(id="m", prompt="...", answer=" A", choices=choices)
  tundra = base.Question(id="t", prompt="...", answer=" B", choices=choices)
  task = tasks.get_task("openbookqa", LETTERS)
  _check(task, marsh, right=[" A", "a", "a marsh", "A marsh.", "a marsh is wet", "A. a tundra"],
         wrong=[" a tundra", "a tundra is cold", "B", "a desert"])
  _check(task, tundra, right=[" B", "a tundra", "A tundra, since"], wrong=[" a", "A", "a marsh"])


def test_cloze_verifier():
  task = tasks.get_task("sciq")
  q = base.Question(id="x", prompt="Question: What powers the cell?\nAnswer:",
                    answer=" the mitochondria")
  _check(task, q,
         right=[" mitochondria", "The Mitochondria.", "  mitochondria  ", "a mitochondria!",
                "mitochondria, which make ATP", "mitochondria\nQuestion: next", "\n mitochondria",
                "“mitochondria”", "the  mitochondria ;"],
         wrong=[" A", " B", "", "  ", "mitochondrion", "mitochondria and ribosomes", "the nucleus",
                "It is the mitochondria", "mitochondria because", "next\nmitochondria"])
  number = base.Question(id="n", prompt="...", answer=" -3.5 degrees")
  _check(task, number, right=["-3.5 degrees.", " -3.5 Degrees"],
         wrong=["3.5 degrees", "-35 degrees", "-3 degrees", "-3.5"])
  letter = base.Question(id="l", prompt="...", answer=" A")  # an answer that is only an article
  _check(task, letter, right=[" A", "a."], wrong=[" B", "an", ""])
  phrase = base.Question(id="p", prompt="...", answer=" plants sprouting, blooming and wilting")
  _check(task, phrase, right=["Plants sprouting, blooming, and wilting.",
                              "plants sprouting blooming and wilting"],
         wrong=["plants sprouting", "plants sprouting, because"])


def test_normalize_answer():
  assert verifiers.normalize_answer("  The Well-known H2O, a 3.5% ") == "well known h2o 3.5"
  assert verifiers.normalize_answer("an") == "an" and verifiers.normalize_answer("...") == ""
  assert verifiers.normalize_answer("-3") != verifiers.normalize_answer("3")


def test_lambada_verifier():
  task = tasks.get_task("lambada")
  q = base.Question(id="x", prompt="... I don't care about", answer=" signs")
  _check(task, q, right=[" signs", "signs.", " signs, she said", "“signs”", "signs\nmore"],
         wrong=[" Signs", " sign", "signs's", " the signs", "", "sig ns"])
  quoted = base.Question(id="y", prompt='... he whispered, "', answer="Nadia")
  _check(task, quoted, right=["Nadia", 'Nadia," he', " Nadia!"], wrong=["Nadia's", "nadia"])
  assert verifiers.first_word(" “Holt,” he") == "Holt" and verifiers.first_word("") == ""
  assert verifiers.strip_punctuation("—don't!") == "don't"


def test_choice_indices_rules():
  choices = ("red", "red", "blue", "a b", "a")
  assert verifiers.choice_indices(" red", choices) == {0, 1}  # identical texts are named together
  assert verifiers.choice_indices("a b c", choices) == {3}    # the longest text wins
  assert verifiers.choice_indices("a", choices) == {0}        # a bare letter is a letter
  assert verifiers.choice_indices("(e)", choices) == {4}
  assert verifiers.choice_indices("F", choices) == set()


def test_gsm8k_verifier():
  q = base.Question(id="x", prompt="Question: ...\nAnswer:",
                    answer=" She sells 16 - 3 - 4 = 9 eggs.\nShe makes 9 * 2 = $18.\n#### 18")
  _check(tasks.get_task("gsm8k"), q,
         right=[" 9 * 2 = 18\n#### 18", "#### 18", "####18", "#### $18.", "#### 18.00", " #### 18 ",
                "#### 18\n\nQuestion: Tom has 5 apples\n#### 5"],
         wrong=["#### 17", "The answer is 18", "", "#### ", "#### -18", "#### 180", "18\n#### 19"])
  big = base.Question(id="y", prompt="...", answer=" ...\n#### 2,125")
  _check(tasks.get_task("gsm8k"), big, right=["#### 2125", "#### 2,125", "#### $2,125.00"],
         wrong=["#### 2,126", "#### 212"])


@pytest.mark.parametrize("text, value", [("18", 18), ("-3", -3), ("$1,250", 1250), ("2.50", 2.5),
                                         ("x = 7.", 7), ("none", None)])
def test_parse_decimal(text, value):
  got = verifiers.parse_decimal(text)
  assert (got is None) if value is None else (got == verifiers.decimal.Decimal(str(value)))
