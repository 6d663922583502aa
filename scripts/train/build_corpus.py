#!/usr/bin/env python3
"""Builds the pretraining corpus from Debian packages: four domains whose styles differ clearly.

    scripture  the King James Bible, one document per chapter          (bible-kjv-text)
    python     the Python standard library's source, one per module    (libpython3.X-minimal/-stdlib)
    fortunes   fortune cookies: quotes, jokes, verse, one per cookie   (fortunes, fortunes-min)
    manpages   Linux manual pages rendered as plain text, one per page (manpages, manpages-dev)

Every source is a package from Debian's archive, never a model or data hub, so the corpus can be
rebuilt anywhere apt works:

    apt-get install bible-kjv-text fortunes manpages manpages-dev man-db groff-base
    python3 scripts/train/build_corpus.py --out data/corpus

Output: <out>/<domain>/{train,valid}.txt (format in corpus.py) and <out>/manifest.json, which records
each source's packages, versions and licenses. The split is deterministic: a document goes to valid
when a hash of its name falls in the lowest 5%. A domain larger than --max-bytes keeps a hash-chosen
subset of its documents, so every run picks the same ones.
"""

import argparse
import glob
import gzip
import hashlib
import json
import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from corpus import DOC_SEP, write_documents

VALID_PERCENT = 5


def run(cmd: list[str], env: dict | None = None) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, env=env).stdout.decode("utf-8", "replace")


def package_version(package: str) -> str:
    try:
        return run(["dpkg-query", "-W", "-f", "${Version}", package])
    except subprocess.CalledProcessError:
        raise SystemExit(f"package {package} is not installed: apt-get install {package}")


def package_files(package: str) -> list[str]:
    package_version(package)  # fails with the install hint when missing
    return run(["dpkg", "-L", package]).splitlines()


def clean(text: str) -> str:
    """Normalises line ends and trailing spaces; removes the separator so it can't split a document."""
    text = text.replace("\r\n", "\n").replace(DOC_SEP, "")
    return "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")


def read_text(path: str) -> str:
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:  # a few old fortune files are Latin-1
        return data.decode("latin-1")


# --- the sources -------------------------------------------------------------------------------


def scripture_documents() -> Iterator[tuple[str, str]]:
    # `bible` (from bible-kjv, pulled in by bible-kjv-text) decodes the compressed text; a wide line
    # keeps one verse per line. Output: a "Book N" heading, a blank line, then "  N verse" lines.
    text = run(["bible", "-l100000", "Genesis 1:1-Revelation 22:21"])
    for chapter in re.split(r"\n(?=\S[^\n]* \d+\n)", text.strip("\n")):
        title, _, verses = chapter.partition("\n")
        verses = "\n".join(line.strip() for line in verses.strip("\n").split("\n"))
        yield title, f"{title}\n\n{verses}"


def python_packages() -> list[str]:
    # The stdlib of Debian's python3, whichever minor version this release ships.
    stdlib = sorted(glob.glob("/usr/lib/python3.*/os.py"), key=lambda p: int(p.split(".")[1].split("/")[0]))
    if not stdlib:
        raise SystemExit("no Debian Python standard library in /usr/lib: apt-get install libpython3-stdlib")
    version = Path(stdlib[-1]).parent.name.removeprefix("python")
    return [f"libpython{version}-minimal", f"libpython{version}-stdlib"]


def python_documents() -> Iterator[tuple[str, str]]:
    for package in python_packages():
        for path in package_files(package):
            # pydoc_data/topics.py is generated documentation in one string, not code.
            if path.endswith(".py") and "/pydoc_data/" not in path and os.path.isfile(path):
                yield path, read_text(path)


def fortunes_documents() -> Iterator[tuple[str, str]]:
    for package in ["fortunes-min", "fortunes"]:
        for path in package_files(package):
            category = Path(path).name
            # Data files only: .dat are indexes, .u8 are links to the same files; ascii-art is pictures.
            if (
                "/games/fortunes/" not in path or not os.path.isfile(path) or os.path.islink(path)
                or "." in category or category == "ascii-art"
            ):
                continue
            cookies = re.split(r"^%\n", read_text(path), flags=re.M)
            for index, cookie in enumerate(cookies):
                if cookie.strip():
                    yield f"{category}/{index}", cookie


def render_manpage(path: str) -> str:
    # man-db formats with groff and strips overstrikes when writing to a pipe. No justification and
    # no hyphenation: they add runs of spaces and split words, noise a small model would learn.
    env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8")
    return run(["man", "--no-justification", "--no-hyphenation", "-E", "ascii", "-l", path], env)


def manpage_documents() -> Iterator[tuple[str, str]]:
    pages = []
    for package in ["manpages", "manpages-dev"]:
        for path in package_files(package):
            if re.search(r"/man/man\d/[^/]+\.gz$", path) and not os.path.islink(path):
                with gzip.open(path, "rt", errors="replace") as f:
                    source = f.read()
                # A page that is only `.so other.3` is an alias: its text is another page's.
                if not re.match(r"(?:\.\\\".*\n|\s*\n)*\.so ", source):
                    pages.append(path)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for path, text in zip(pages, pool.map(render_manpage, pages)):
            yield Path(path).name.removesuffix(".gz"), text


@dataclass
class Source:
    domain: str
    description: str
    packages: Callable[[], list[str]]
    license: str
    documents: Callable[[], Iterator[tuple[str, str]]]


SOURCES = [
    Source(
        "scripture",
        "The King James Version of the Bible (1611), one document per chapter.",
        lambda: ["bible-kjv-text", "bible-kjv"],
        "Public domain (the KJV text); the bible-kjv retrieval program is GPL-2+.",
        scripture_documents,
    ),
    Source(
        "python",
        "Source code of the Python standard library as packaged by Debian, one document per module.",
        python_packages,
        "PSF-2.0 (Python Software Foundation License), with a few modules under compatible licenses "
        "listed in the package's copyright file.",
        python_documents,
    ),
    Source(
        "fortunes",
        "Fortune cookies (quotes, jokes, aphorisms, verse) from the BSD fortune program's data files, "
        "one document per cookie; the ascii-art category is left out.",
        lambda: ["fortunes-min", "fortunes"],
        "BSD-3-clause (the fortune-mod collection, per the package's copyright file).",
        fortunes_documents,
    ),
    Source(
        "manpages",
        "Linux man-pages project pages (sections 1-8, incl. system calls and C library), rendered to "
        "plain ASCII text by man-db/groff at 80 columns, one document per page.",
        lambda: ["manpages", "manpages-dev"],
        "Per page: mostly Linux-man-pages-copyleft (verbatim copying and modified versions allowed), "
        "some GPL-2+, BSD and Expat; see the package's copyright file.",
        manpage_documents,
    ),
]

# Rendering tools whose version changes the text; recorded so a rebuild can be compared.
TOOL_PACKAGES = ["man-db", "groff-base"]


def hash_fraction(salt: str, name: str) -> float:
    digest = hashlib.sha256(f"{salt}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def build_domain(source: Source, out: Path, max_bytes: int) -> dict:
    documents = [(name, clean(text)) for name, text in source.documents()]
    documents = [(name, text) for name, text in documents if text]
    available = sum(len(text.encode()) for _, text in documents)

    # Keep a hash-chosen subset under the cap, then restore the source order (chapters in order).
    keep, total = set(), 0
    for name, text in sorted(documents, key=lambda d: hash_fraction("select", d[0])):
        size = len(text.encode())
        if total + size > max_bytes:
            continue
        keep.add(name)
        total += size

    splits = {"train": [], "valid": []}
    for name, text in documents:
        if name in keep:
            split = "valid" if hash_fraction("split", name) < VALID_PERCENT / 100 else "train"
            splits[split].append(text)

    (out / source.domain).mkdir(parents=True, exist_ok=True)
    sizes = {split: write_documents(out / source.domain / f"{split}.txt", docs) for split, docs in splits.items()}
    packages = source.packages()
    return {
        "description": source.description,
        "packages": [{"name": p, "version": package_version(p)} for p in packages],
        "license": source.license,
        "copyright_files": [f"/usr/share/doc/{p}/copyright" for p in packages],
        "documents": {split: len(docs) for split, docs in splits.items()},
        "bytes": sizes,
        "documents_available": len(documents),
        "bytes_available": available,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("data/corpus"))
    parser.add_argument("--max-bytes", type=int, default=10_000_000, help="cap per domain (default 10 MB)")
    args = parser.parse_args()

    manifest = {
        "format": "<domain>/{train,valid}.txt: documents, each followed by a line holding only U+001E",
        "split": f"valid = documents whose sha256('split:'+name) falls in the lowest {VALID_PERCENT}%",
        "max_bytes_per_domain": args.max_bytes,
        "debian_version": Path("/etc/debian_version").read_text().strip(),
        "tools": {p: package_version(p) for p in TOOL_PACKAGES},
        "domains": {},
    }
    for source in SOURCES:
        info = build_domain(source, args.out, args.max_bytes)
        manifest["domains"][source.domain] = info
        print(f"{source.domain:10s} train {info['documents']['train']:6d} docs {info['bytes']['train'] / 1e6:6.2f} MB   "
              f"valid {info['documents']['valid']:5d} docs {info['bytes']['valid'] / 1e6:5.2f} MB   "
              f"(of {info['bytes_available'] / 1e6:.2f} MB available)")
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {args.out}/manifest.json")


if __name__ == "__main__":
    main()
