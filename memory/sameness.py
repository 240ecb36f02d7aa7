"""Whether two prompts ask the same thing: the model-call cache's second opinion.

Guarantee: ``same_question(a, b)`` is True only when nothing a coding assistant would answer
differently separates the two prompts: the same content words (up to inflection and a table of
programming synonyms), the same negated words, no swapped direction (``A to B`` / ``B to A``),
the same numbers, identifiers and quoted text in the same order, the same pasted material
verbatim, the same modal (can, should, must, may) and the same kind of question (yes/no or
not); a prompt of fewer than two terms is never judged. It is symmetric, deterministic and
offline. It errs toward False: a False costs one model call, a wrong True serves the answer to
another question, so every rule can only refuse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

import simplemma

#: read as prose; what follows is compared verbatim (this also bounds the work per prompt)
MAX_INSTRUCTION_CHARS = 2_000
#: a prompt with fewer terms leaves too little to compare: it only ever hits exactly
MIN_TERMS = 2
#: up to this many terms, the prepositions and conjunctions that relate things must match too
SHORT_TERMS = 3
MAX_WORD_CHARS = 40  # longer words are names, compared as they are

# ---- what the words are ---------------------------------------------------------------------
# Not a general stop-word list: those drop "not", "off", "up", "before", "only", "most" and
# "than", each of which changes an answer. Only words that never do are dropped here.

#: inside a noun phrase: a negation or a role goes on past these ("to a list of ints")
_DETERMINERS = frozenset(
    "a an the my your our his her its their this these those some any of".split()
)
_STOP = frozenset(
    "am is are was were be been being do does did done would will shall have has had "
    "i me you we us it they them he she him someone something anything "
    "how what which that whom there here please just simply actually really basically also "
    "kindly e.g i.e etc thanks thank hi hello ok okay "
    "and or but so if whether then as at by for in of on with using via through within inside "
    "between among about while because like upon across around".split()
)
#: conjunctions and prepositions that relate things: in a short prompt each one carries the
#: meaning. Left out: those that only name the setting or tool ("in Python", "with Go",
#: "using pip", "on Linux", "a summary of X"), which how-to prose swaps freely
_LINKS = frozenset(
    "and or but if whether as through within inside between among about while because like "
    "upon across around".split()
)
_NEGATORS = frozenset("not no never without none nothing neither nor".split())
#: "Can I …?" asks whether it is possible, "Should I …?" whether it is wise ("how can I" is
#: a frame, stripped before this)
_MODALS = {"can": "can", "could": "can", "should": "should", "ought": "should"}
_MODALS |= {"must": "must", "may": "may", "might": "may"}
#: words that give the terms after them a role (``convert A to B``: B is the target)
_ROLES = {"to": "to", "into": "to", "onto": "to", "toward": "to", "towards": "to"}
_ROLES |= {"from": "from", "than": "than", "over": "than"}
#: a "to" after one of these starts a verb ("how to", "need to"), not a target
_INFINITIVE_HEADS = frozenset(
    "how want wants wanted need needs trying try tries able unable going have has had used "
    "way ways steps command possible impossible easy hard safe best better good like order "
    "supposed allowed required meant seem seems".split()
)
#: "the with statement", "a for loop": here the little word is what the question is about
_SYNTAX_NOUNS = frozenset("statement loop keyword operator clause block expression".split())
_NUMBERS = {
    word: str(n)
    for n, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
} | {"single": "1", "thirty": "30", "forty": "40", "fifty": "50", "hundred": "100"}

# Each line: the concept, then the words and phrases (joined by +) that name it. General
# programming prose only; a pair that means different things in some context stays apart
# (update/upgrade, declare/define, stop/kill, join/merge, print/show, node/Node.js).
_SYNONYMS = """
remove delete erase | create make generate | change modify alter edit | show display
get obtain retrieve fetch | find locate search | fix resolve solve repair | run execute
call invoke | start begin launch | stop halt | exit quit | merge combine | check verify
prevent avoid | allow permit | decrease reduce | iterate loop | big large | small little
bigger larger | biggest largest | fast quick speedy | faster quicker | fastest quickest
slow sluggish | problem issue | benefit advantage | drawback disadvantage downside
example sample | function func fn | variable var | argument arg args param parameter
directory dir folder | repository repo | configuration config conf | configure set+up setup
environment env | envvar environment+variable env+var env+variable | dictionary dict
string str | integer int | boolean bool | database db | application app
documentation docs doc | message msg | information info | library lib | package pkg
dependency dep deps | temporary temp tmp | maximum max | minimum min | identifier id
implementation impl | specification spec | regex regexp regular+expression | cli command+line
stderr standard+error | stdout standard+output | stdin standard+input | pr pull+request
traceback stack+trace stacktrace | kubernetes k8s kube | postgresql postgres pg
javascript js | typescript ts | python py | go golang | nodejs node.js | csharp c# c+sharp
cpp c++ | macos osx os+x mac+os | venv virtualenv virtual+environment
summarize summarise summary sum+up tldr | serialize serialise | deserialize deserialise
initialize initialise | optimize optimise | normalize normalise | customize customise
organize organise | synchronize synchronise | analyze analyse | behavior behaviour
color colour | license licence | all every each | whole entire | previous prior
async asynchronous asynchronously | sync synchronous synchronously | if whether
"""


def _table() -> tuple[dict[str, str], dict[tuple[str, ...], str]]:
    words: dict[str, str] = {}
    phrases: dict[tuple[str, ...], str] = {}
    for group in _SYNONYMS.replace("\n", " | ").split("|"):
        names = group.split()
        for name in names:
            if "+" in name:
                phrases[tuple(name.split("+"))] = names[0]
            else:
                words[name] = names[0]
    return words, phrases


_WORDS, _PHRASES = _table()
_LONGEST_PHRASE = max(len(p) for p in _PHRASES)
_KEEP_S = ("ss", "us", "is", "os", "as", "ps")  # not plurals: class, status, redis, https

# ---- how a prompt is cut up -----------------------------------------------------------------

_LITERAL = re.compile(r"`([^`]+)`|(?<![\w'])'([^'\n]+)'(?!\w)|\"([^\"\n]+)\"")
# the instruction ends at the first line break, or at a colon that introduces pasted material
_BOUNDARY = re.compile(r"\n|(?<![:/\\]):(?=\s)")
_TOKEN = re.compile(
    r"\x00(?P<literal>\d+)\x00"
    r"|(?P<number>\d(?:[\w.]*\w)?)"
    r"|(?P<code>[a-z_$][\w$]*(?:(?:\.|::|->|/)[a-z_$][\w$]*)+(?:\(\))?|[a-z_$][\w$]*\(\))"
    r"|(?P<word>[a-z_$][\w$]*[#+]*)"
    r"|(?P<operator>!?[=+\-*/%<>&|^~]+|!(?=[\w(]))"
)
_CONTRACTIONS = [
    (re.compile(r"\bcan'?t\b|\bcannot\b"), "can not"),
    (re.compile(r"\bwon'?t\b"), "will not"),
    (re.compile(r"n't\b"), " not"),
    (re.compile(r"'m\b"), " am"),
    (re.compile(r"'re\b"), " are"),
    (re.compile(r"'ve\b"), " have"),
    (re.compile(r"'ll\b"), " will"),
    (re.compile(r"'d\b"), " would"),
    (re.compile(r"'s\b|(?<=s)'(?=\s)"), ""),  # is, has or a possessive: none changes the ask
]
_HYPHEN = re.compile(r"(?<=[a-z])-(?=[a-z])")  # command-line is command line
_REQUEST = r"(?:can|could|would|will)\s+(?:you|someone|anyone)(?:\s+please)?"
# "Is X safe?" and "How do I make X safe?" want different answers; "Can you explain X?" is a
# request, not a yes/no question
_YES_NO = re.compile(
    rf"^\W*(?!{_REQUEST}\s+(?:tell|show|teach|help|explain|describe|give|write|list|suggest|"
    r"summarize|summarise|fix|review|create|make|convert|translate)\b)(?!is\s+there\s+(?:a|an|"
    r"any)\s+(?:\w+\s+)?(?:way|method|command|option)\b)(?:is|are|was|were|am|can|could|should|"
    r"would|will|shall|does|do|did|has|have|may|might|must)\b"
)
# the ways of saying "how do I" or "explain": they frame a question and never change it
_FRAMES = re.compile(
    r"\b(?:"
    rf"{_REQUEST}(?:\s+(?:tell|show|teach|help|explain\s+to)\s+me)?(?:\s+how\s+to)?"
    r"|(?:please|kindly)|(?:tell|show|teach|help)\s+me(?:\s+how\s+to)?|give\s+me"
    r"|i\s+(?:want|need|would\s+like|wish|am\s+trying|am\s+wondering|was\s+wondering|wonder)"
    r"(?:\s+how)?(?:\s+to)?"
    r"|how\s+(?:do|does|can|could|should|would|might|may|must|will)\s+"
    r"(?:i|you|we|one|someone|people)|how\s+to"
    r"|what\s+(?:is\s+|are\s+)?the\s+(?:(?:best|right|proper|correct|recommended|easiest|"
    r"simplest|standard|usual|normal|idiomatic|preferred|cleanest|common|good)\s+)?"
    r"(?:way|ways|method|approach|steps|command|syntax|procedure|process)\s+(?:to|for|of)"
    r"|is\s+there\s+(?:a|an|any)\s+(?:(?:easy|simple|good|quick)\s+)?"
    r"(?:way|method|command|option)\s+(?:to|for|of)"
    r"|explain(?:\s+to\s+me)?|describe|(?:the\s+)?meaning\s+of|how"
    r")\b"
)
_WHAT_DOES_MEAN = re.compile(r"^\W*what\s+(?:does|do|did)\b(.*)\bmean\W*$", re.S)


@dataclass(slots=True)
class Question:
    """What of a prompt decides its answer (see :func:`read`)."""

    concepts: set[str] = field(default_factory=set)
    exact: list[str] = field(default_factory=list)  # numbers, code, quoted text, in order
    payload: str = ""  # pasted material after the instruction, whitespace collapsed
    negated: set[str] = field(default_factory=set)  # terms that a negation governs
    negations: int = 0
    roles: dict[str, set[str]] = field(default_factory=dict)  # to/from/than -> terms
    links: set[str] = field(default_factory=set)  # the relating words of _LINKS
    yes_no: bool = False

    @property
    def terms(self) -> int:
        return len(self.concepts) + len(self.exact) + bool(self.payload)


def same_question(a: str, b: str) -> bool:
    """True when one answer serves both prompts (see the module's guarantee)."""
    return agree(read(a), read(b))


def agree(a: Question, b: Question) -> bool:
    """Whether two read prompts ask the same thing; symmetric."""
    if min(a.terms, b.terms) < MIN_TERMS:
        return False
    if (a.payload, a.exact, a.concepts, a.yes_no) != (b.payload, b.exact, b.concepts, b.yes_no):
        return False
    if a.negated != b.negated or a.negations % 2 != b.negations % 2:
        return False
    if ("or" in a.links) != ("or" in b.links):  # "X and Y" is not "X or Y"
        return False
    if max(a.terms, b.terms) <= SHORT_TERMS and a.links != b.links:
        return False
    return not _directions_clash(a, b)


def _directions_clash(a: Question, b: Question) -> bool:
    """A shared term marked one way in one prompt and another way in the other (``to S3`` /
    ``from S3``), or one role given to different shared terms (``A to B`` / ``B to A``).
    ``from a list in Python`` and ``from a Python list`` do not clash: each has ``list``."""
    terms_a, terms_b = _terms(a), _terms(b)
    for term in terms_a & terms_b:
        ra, rb = _roles_of(a, term), _roles_of(b, term)
        if ra and rb and ra != rb:
            return True
    for role in a.roles.keys() | b.roles.keys():
        only_a = a.roles.get(role, set()) - b.roles.get(role, set())
        only_b = b.roles.get(role, set()) - a.roles.get(role, set())
        if only_a & terms_b and only_b & terms_a:
            return True
    return False


def _terms(q: Question) -> set[str]:
    return q.concepts | {_exact(x) for x in q.exact}


def _roles_of(q: Question, term: str) -> set[str]:
    return {role for role, terms in q.roles.items() if term in terms}


def _exact(value: str) -> str:
    return "\x00" + value  # never equal to a concept


# ---- reading a prompt -----------------------------------------------------------------------


def asks_same(question: Question, prompt: str) -> bool:
    """``same_question`` for a prompt already read (a lookup reads its own once)."""
    return agree(question, read(prompt))


def read(prompt: str) -> Question:
    """The parts of ``prompt`` that decide its answer. Pure; linear in the prompt's length."""
    head, payload = _split(prompt)
    literals: list[str] = []
    text = _normalise(_LITERAL.sub(lambda m: _stash(m, literals), head))
    q = Question(payload=payload, yes_no=_YES_NO.match(text) is not None)
    _Reader(q).feed(_tokens(_strip_frames(text), literals))
    return q


def _split(prompt: str) -> tuple[str, str]:
    """(instruction, pasted material): the material is compared verbatim, not by meaning."""
    prompt = prompt.strip()
    cut = _BOUNDARY.search(prompt, 0, MAX_INSTRUCTION_CHARS)
    end = cut.start() if cut else min(len(prompt), MAX_INSTRUCTION_CHARS)
    rest = prompt[cut.end() if cut else end :]
    return prompt[:end], " ".join(rest.split()).rstrip(".?! ")


def _stash(match: re.Match[str], literals: list[str]) -> str:
    literals.append(" ".join(next(g for g in match.groups() if g is not None).split()))
    return f" \x00{len(literals) - 1}\x00 "


def _normalise(text: str) -> str:
    text = text.replace("\u2019", "'").replace("\u2018", "'").lower()
    for pattern, replacement in _CONTRACTIONS:
        text = pattern.sub(replacement, text)
    return _HYPHEN.sub(" ", text)


def _strip_frames(text: str) -> str:
    meaning = _WHAT_DOES_MEAN.match(text)
    if meaning:
        text = meaning.group(1)  # "what does X mean" asks what "explain X" asks
    return _FRAMES.sub(" ", text)


def _tokens(text: str, literals: list[str]) -> list[tuple[str, str]]:
    """(kind, text) pairs; kind is literal, number, code, word or operator."""
    out: list[tuple[str, str]] = []
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup or "word"
        value = m.group(kind)
        if kind == "literal":
            value = literals[int(value)]
        elif kind == "code" and value in _WORDS:
            kind = "word"  # a name written like code: node.js
        elif kind == "word" and ("_" in value or "$" in value):
            kind = "code"
        out.append((kind, value))
    return out


class _Reader:
    """One pass over the tokens: terms, each with the negation and role that precede it. A
    negation or role holds through a noun phrase (``not a nullable column``) and ends at the
    next little word that is not an article."""

    def __init__(self, q: Question) -> None:
        self.q = q
        self.role: str | None = None
        self.negate = False

    def feed(self, tokens: list[tuple[str, str]]) -> None:
        words = [value if kind == "word" else "" for kind, value in tokens]
        previous, i = "", 0
        while i < len(tokens):
            kind, value = tokens[i]
            concept, width = _phrase(words, i)
            if concept is not None:
                self._term(concept)
            elif kind != "word":
                self._exact(value)
            elif value in _NUMBERS:
                self._exact(_NUMBERS[value])
            else:
                self._word(value, previous)
            previous, i = value, i + width

    def _word(self, word: str, previous: str) -> None:
        if word in _NEGATORS:
            self.negate = True
            self.q.negations += 1
        elif word in _ROLES and previous not in _INFINITIVE_HEADS:
            self.role, self.negate = _ROLES[word], False
        elif word in _MODALS:
            self.role, self.negate = None, False
            self._term("modal " + _MODALS[word])
        elif word in _DETERMINERS:
            pass  # inside a noun phrase: its marks go on
        elif word in _STOP or word in _ROLES:
            self.role, self.negate = None, False
            if word in _LINKS:
                self.q.links.add(_WORDS.get(word, word))
        else:
            self._term(concept(word))

    def _exact(self, value: str) -> None:
        self.q.exact.append(value)
        self._term(_exact(value))

    def _term(self, term: str) -> None:
        if not term.startswith("\x00"):
            self.q.concepts.add(term)
        if self.role is not None:
            self.q.roles.setdefault(self.role, set()).add(term)
        if self.negate:
            self.q.negated.add(term)


def _phrase(words: list[str], i: int) -> tuple[str | None, int]:
    """A concept of several words starting at ``words[i]`` ("regular expression", "for
    loop"), and how many words it takes; (None, 1) when none starts there."""
    first = words[i]
    if not first:
        return None, 1
    following = words[i + 1] if i + 1 < len(words) else ""
    little = first in _STOP or first in _ROLES or first in _NEGATORS
    if little and following and lemma(following) in _SYNTAX_NOUNS:
        return f"{first} {lemma(following)}", 2
    for width in range(min(_LONGEST_PHRASE, len(words) - i), 1, -1):
        parts = tuple(lemma(x) if x else "" for x in words[i : i + width])
        if parts in _PHRASES:
            return _PHRASES[parts], width
    return None, 1


def concept(word: str) -> str:
    """The concept a lower-case word names: its synonym group, else its dictionary form."""
    if word in _WORDS:
        return _WORDS[word]
    if not word.isalpha():
        return word  # boto3, c++, base64: names, not English
    base = lemma(word)
    return _WORDS.get(base, base)


@lru_cache(maxsize=16_384)
def lemma(word: str) -> str:
    """The dictionary form of an English word (simplemma, which lemmatises without conflating
    derived words as a stemmer does: executable is not execute); an unknown word loses a
    plural s."""
    if len(word) > MAX_WORD_CHARS:
        return word  # no English word is this long; and the cache above stays small
    base = simplemma.lemmatize(word, lang="en", low_memory=True)
    if base == word and len(word) > 3 and word.endswith("s") and not word.endswith(_KEEP_S):
        return word[:-1]
    return base
