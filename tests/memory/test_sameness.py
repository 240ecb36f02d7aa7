"""same_question: one answer serves both prompts, or the cache must not pretend it does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memory import sameness
from memory.sameness import read, same_question

PAIRS = json.loads((Path(__file__).parents[1] / "data" / "cache_pairs.json").read_text())

# the examples of the issue, and near-misses of each kind the check has a rule for
DIFFERENT = [
    (
        "column-table",
        "How do I rename a column in Postgres?",
        "How do I rename a table in Postgres?",
    ),
    ("read-append", "Open a file for reading in Python", "Open a file for appending in Python"),
    ("enable-disable", "How do I enable a feature flag?", "How do I disable a feature flag?"),
    ("not", "Why does my test pass?", "Why does my test not pass?"),
    ("contraction", "Why does the build fail on CI?", "Why doesn't the build fail on CI?"),
    ("without", "How do I run pytest with coverage?", "How do I run pytest without coverage?"),
    (
        "negation-scope",
        "Stash staged but not unstaged changes",
        "Stash unstaged but not staged changes",
    ),
    ("version", "Install Python 3.11 on Ubuntu", "Install Python 3.12 on Ubuntu"),
    ("number-word", "Squash the last 3 commits in git", "Squash the last five commits in git"),
    ("language", "How do I reverse a list in Python?", "How do I reverse a list in Ruby?"),
    ("add-remove", "How do I add a column to a table?", "How do I remove a column from a table?"),
    (
        "sync-async",
        "Make an HTTP request synchronously in Python",
        "Make an async HTTP request in Python",
    ),
    ("asc-desc", "Sort a list in ascending order", "Sort a list in descending order"),
    ("to-swapped", "Convert a string to bytes in Python", "Convert bytes to a string in Python"),
    ("to-from", "How do I copy a file to the server?", "How do I copy a file from the server?"),
    (
        "of-phrase",
        "Convert a list of strings to a list of ints",
        "Convert a list of ints to a list of strings",
    ),
    ("into-swapped", "Merge main into my feature branch", "Merge my feature branch into main"),
    ("than-swapped", "Is Python slower than Java?", "Is Java slower than Python?"),
    ("code-token", "What does `git reset --soft` do?", "What does `git reset --hard` do?"),
    (
        "code-order",
        "Is `a.sort()` faster than `sorted(a)`?",
        "Is `sorted(a)` faster than `a.sort()`?",
    ),
    ("operator", "Select rows where age > 30 in pandas", "Select rows where age < 30 in pandas"),
    ("pasted", "Summarize this error: KeyError: 'id'", "Summarize this error: KeyError: 'name'"),
    (
        "keyword",
        "What does the with statement do in Python?",
        "What does the if statement do in Python?",
    ),
    ("loop", "Break out of a for loop in Python", "Break out of a while loop in Python"),
    ("on-off", "How do I turn on dark mode in VS Code?", "How do I turn off dark mode in VS Code?"),
    ("and-or", "Should I install numpy and pandas?", "Should I install numpy or pandas?"),
    ("yes-no", "How do I delete a branch in git?", "Can I delete a branch in git?"),
    ("can-should", "Can I store JWTs in localStorage?", "Should I store JWTs in localStorage?"),
    ("derived-word", "Is this script executable?", "Execute this script, is that safe?"),
    ("one-term", "What is it?", "Why is it?"),
    ("single-word", "ping", "pong"),
]
SAME = [
    ("frame", "How do I reverse a list in Python?", "What's the way to reverse a Python list?"),
    (
        "abbreviation",
        "How do I rename a column in PostgreSQL?",
        "How to rename a column in Postgres?",
    ),
    ("synonym", "How do I delete a git branch?", "How can I remove a git branch?"),
    (
        "plural-order",
        "Difference between a process and a thread",
        "Difference between threads and processes?",
    ),
    ("inflection", "Why is my component rendering twice?", "Why does my component render twice?"),
    ("negation", "Why is my test not running?", "Why does my test not run?"),
    ("number-word", "Squash the last 3 commits in git", "Squash the last three commits with git"),
    ("phrase", "Explain this regex: ^[a-z]+$", "What does this regular expression mean: ^[a-z]+$"),
    (
        "summary",
        "Summarize this error: KeyError: 'id'",
        "Give me a summary of this error: KeyError: 'id'",
    ),
    (
        "spelling",
        "How do I serialize an object to JSON in C#?",
        "How to serialise an object to JSON in C#?",
    ),
    (
        "into-to",
        "Convert a string to an integer in JavaScript",
        "Convert a string into an int in JS",
    ),
    ("request", "Can you explain dependency injection?", "What is dependency injection?"),
    ("modal", "Can I store JWTs in localStorage?", "Could I store JWTs in localStorage?"),
]


@pytest.mark.parametrize(("a", "b"), [p[1:] for p in DIFFERENT], ids=[p[0] for p in DIFFERENT])
def test_same_question_refuses_a_different_question(a: str, b: str) -> None:
    assert not same_question(a, b)
    assert not same_question(b, a)


@pytest.mark.parametrize(("a", "b"), [p[1:] for p in SAME], ids=[p[0] for p in SAME])
def test_same_question_accepts_a_rewording(a: str, b: str) -> None:
    assert same_question(a, b)
    assert same_question(b, a)


ANTONYMS = [
    ("enable", "disable"), ("add", "remove"), ("show", "hide"), ("open", "close"),
    ("start", "stop"), ("push", "pull"), ("upload", "download"), ("encode", "decode"),
    ("encrypt", "decrypt"), ("serialize", "deserialize"), ("compress", "decompress"),
    ("import", "export"), ("lock", "unlock"), ("increase", "decrease"), ("install", "uninstall"),
    ("mount", "unmount"), ("zip", "unzip"), ("read", "write"), ("create", "drop"),
    ("upgrade", "downgrade"), ("include", "exclude"), ("allow", "deny"), ("follow", "unfollow"),
]  # fmt: skip


@pytest.mark.parametrize(("verb", "opposite"), ANTONYMS, ids=[f"{a}-{b}" for a, b in ANTONYMS])
def test_no_synonym_group_joins_antonyms(verb: str, opposite: str) -> None:
    assert not same_question(
        f"How do I {verb} the config file?", f"How do I {opposite} the config file?"
    )


def test_a_negation_before_the_subject_is_refused_not_guessed() -> None:
    # "isn't my test running": the negation's phrase holds the subject too; a known miss
    assert not same_question("Why is my test not running?", "Why isn't my test running?")


def test_same_question_never_judges_a_prompt_of_one_term() -> None:
    assert read("What is a monad?").terms < sameness.MIN_TERMS
    assert not same_question("What is a monad?", "What's a monad?")


def test_pasted_material_is_compared_verbatim() -> None:
    a = "Summarize this diff: - timeout = 30 + timeout = 60"
    assert same_question(a, "Summarise this diff: - timeout = 30 + timeout = 60")
    assert not same_question(a, "Summarize this diff: - timeout = 60 + timeout = 30")
    assert not same_question(a, "Summarize this diff: - Timeout = 30 + timeout = 60")


def test_quoted_text_keeps_its_case_and_prose_does_not() -> None:
    assert not same_question("What does `String` mean in Java?", "What does `string` mean in Java?")
    assert same_question("How do I install Docker on Ubuntu?", "how do i install docker on ubuntu")


def test_reading_a_huge_prompt_reads_only_its_instruction_as_prose() -> None:
    prose = "why " + "word " * 200_000
    q = read(prose)
    assert len(q.payload) > 900_000  # the rest is compared verbatim
    assert not same_question(prose, prose[:-10] + "other ")


def _all(half: str) -> list[dict[str, str]]:
    return [pair for split in ("tune", "holdout") for pair in PAIRS[half][split]]


def test_cache_pairs_have_two_halves_of_sixty_or_more_split_tune_and_holdout() -> None:
    for half in ("paraphrases", "near_misses"):
        tune, holdout = PAIRS[half]["tune"], PAIRS[half]["holdout"]
        assert len(tune) + len(holdout) >= 60
        assert abs(len(tune) - len(holdout)) <= 1
        assert all(pair["a"] != pair["b"] for pair in tune + holdout)


@pytest.mark.parametrize("split", ["tune", "holdout"])
def test_same_question_refuses_every_near_miss_of_the_data_set(split: str) -> None:
    accepted = [p for p in PAIRS["near_misses"][split] if same_question(p["a"], p["b"])]
    assert accepted == []


@pytest.mark.parametrize("split", ["tune", "holdout"])
def test_same_question_accepts_most_paraphrases_of_the_data_set(split: str) -> None:
    pairs = PAIRS["paraphrases"][split]
    assert sum(same_question(p["a"], p["b"]) for p in pairs) / len(pairs) >= 0.6


def test_same_question_is_symmetric_over_the_data_set() -> None:
    for pair in _all("paraphrases") + _all("near_misses"):
        assert same_question(pair["a"], pair["b"]) == same_question(pair["b"], pair["a"])
