"""Split files into chunks: Python by syntax (``ast``), everything else by lines with overlap.

Every chunk carries its path and 1-based inclusive line range, so a hit points at code.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import PurePosixPath

MAX_CHUNK_LINES = 120
MAX_CHUNK_CHARS = 12_000

LANGUAGES = {
    ".py": "python", ".pyi": "python", ".md": "markdown", ".rst": "rst", ".txt": "text",
    ".toml": "toml", ".yaml": "yaml", ".yml": "yaml", ".json": "json", ".js": "javascript",
    ".ts": "typescript", ".tsx": "typescript", ".go": "go", ".rs": "rust", ".java": "java",
    ".c": "c", ".h": "c", ".cpp": "cpp", ".hpp": "cpp", ".sh": "shell", ".sql": "sql",
    ".html": "html", ".css": "css", ".rb": "ruby", ".cfg": "ini", ".ini": "ini",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Chunk:
    text: str
    path: str
    start_line: int
    end_line: int
    symbol: str = ""
    unit: str = "lines"  # module-doc | function | class | lines
    language: str = "text"

    @property
    def metadata(self) -> dict[str, object]:
        meta: dict[str, object] = {
            "path": self.path,
            "start_line": self.start_line,
            "end_line": self.end_line,
            "language": self.language,
            "unit": self.unit,
        }
        if self.symbol:
            meta["symbol"] = self.symbol
        return meta


def language_of(path: str) -> str:
    return LANGUAGES.get(PurePosixPath(path).suffix.lower(), "text")


def chunk_file(path: str, text: str, *, lines: int = 60, overlap: int = 10) -> list[Chunk]:
    """Chunks of one file; Python that does not parse is chunked by lines."""
    language = language_of(path)
    if language == "python":
        try:
            return _python_chunks(path, text, lines, overlap)
        except (SyntaxError, ValueError, RecursionError):
            pass
    source = text.splitlines()
    return _windows(path, source, 1, len(source), lines, overlap, "", "lines", language)


def _windows(
    path: str, source: list[str], first: int, last: int, size: int, overlap: int,
    symbol: str, unit: str, language: str,
) -> list[Chunk]:  # fmt: skip
    """Line windows over source[first-1 : last] (1-based, inclusive), blank ones skipped."""
    chunks: list[Chunk] = []
    start = first
    while start <= last:
        end = min(last, start + size - 1)
        body = "\n".join(source[start - 1 : end])
        if body.strip():
            chunks.append(Chunk(body[:MAX_CHUNK_CHARS], path, start, end, symbol, unit, language))
        if end == last:
            break
        start = end - overlap + 1
    return chunks


def _python_chunks(path: str, text: str, size: int, overlap: int) -> list[Chunk]:
    tree = ast.parse(text)
    source = text.splitlines()
    chunks: list[Chunk] = []
    doc = ast.get_docstring(tree, clean=False)
    if doc and tree.body:
        node = tree.body[0]
        chunks.append(
            _span(path, source, node.lineno, node.end_lineno or node.lineno, "", "module-doc")
        )
    run: list[int] = []  # first and last line of module-level code between definitions
    for node in [*(tree.body[1:] if doc else tree.body), None]:
        if node is None or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if run:
                chunks.extend(
                    _windows(path, source, run[0], run[-1], size, overlap, "", "lines", "python")
                )
                run = []
            if node is not None:
                chunks.extend(_definition(path, source, node, "", size, overlap))
        else:
            run = [run[0] if run else _first_line(node), node.end_lineno or node.lineno]
    return sorted(chunks, key=lambda c: (c.start_line, c.end_line))


def _first_line(node: ast.AST) -> int:
    decorators = getattr(node, "decorator_list", [])
    return min([node.lineno, *(d.lineno for d in decorators)])  # type: ignore[attr-defined]


def _span(path: str, source: list[str], first: int, last: int, symbol: str, unit: str) -> Chunk:
    body = "\n".join(source[first - 1 : last])
    return Chunk(body[:MAX_CHUNK_CHARS], path, first, last, symbol, unit, "python")


def _definition(
    path: str, source: list[str], node: ast.stmt, prefix: str, size: int, overlap: int
) -> list[Chunk]:
    name = prefix + node.name  # type: ignore[attr-defined]
    first, last = _first_line(node), node.end_lineno or node.lineno
    if isinstance(node, ast.ClassDef):
        return _class(path, source, node, name, size, overlap)
    if last - first + 1 <= MAX_CHUNK_LINES:
        return [_span(path, source, first, last, name, "function")]
    return _windows(path, source, first, last, size, overlap, name, "function", "python")


def _class(
    path: str, source: list[str], node: ast.ClassDef, name: str, size: int, overlap: int
) -> list[Chunk]:
    """The class header (up to its first method) as one chunk, each method as another."""
    first, last = _first_line(node), node.end_lineno or node.lineno
    members = [
        n for n in node.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    ]
    if not members or last - first + 1 <= 25:
        return _windows(
            path, source, first, last, MAX_CHUNK_LINES, overlap, name, "class", "python"
        )
    if members[0] is node.body[0]:  # a bare `class X(Base):` line is no answer to anything
        chunks: list[Chunk] = []
    else:
        chunks = _class_head(path, source, first, _first_line(members[0]) - 1, name, overlap)
    for member in members:
        chunks.extend(_definition(path, source, member, name + ".", size, overlap))
    return chunks


def _class_head(
    path: str, source: list[str], first: int, last: int, name: str, overlap: int
) -> list[Chunk]:
    """The class line with its docstring and attributes, up to its first member."""
    return _windows(
        path, source, first, max(first, last), MAX_CHUNK_LINES, overlap, name, "class", "python"
    )
