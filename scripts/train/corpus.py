"""The corpus file format, shared by the builder (stdlib only) and the training scripts.

A corpus is a folder with manifest.json and one folder per domain holding train.txt and valid.txt.
Each .txt file is a sequence of documents, each followed by a line holding only DOC_SEP (the ASCII
record separator): a character that never occurs in the sources, so documents need no escaping and
the files stay readable in an editor.
"""

import json
from pathlib import Path

DOC_SEP = "\x1e"


def write_documents(path: Path, documents: list[str]) -> int:
    """Writes the documents in the corpus format; returns the bytes written."""
    text = "".join(doc + "\n" + DOC_SEP + "\n" for doc in documents)
    path.write_text(text, encoding="utf-8")
    return len(text.encode("utf-8"))


def read_documents(path: Path) -> list[str]:
    """Reads a corpus file. Any other text file reads as a single document."""
    text = Path(path).read_text(encoding="utf-8")
    return [doc.strip("\n") for doc in text.split("\n" + DOC_SEP + "\n") if doc.strip()]


def corpus_domains(corpus_dir: Path) -> list[str]:
    """The domains in the manifest's order, which every script uses for its tables."""
    manifest = json.loads((Path(corpus_dir) / "manifest.json").read_text())
    return list(manifest["domains"])
