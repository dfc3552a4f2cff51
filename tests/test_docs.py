"""README and docs/ stay true to the repo: every relative link resolves (anchors included), every `make` target they
name is in the Makefile, every params key they name is in params.yaml, and every docs/ file the code cites exists."""

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PARAM_ROOTS = ("seed", "data", "model", "train", "evaluate")
FILE_SUFFIXES = {"py", "npy", "pt", "pth", "tsv", "csv", "json", "png", "md", "yaml", "yml", "lock", "txt", "html"}


def doc_id(path):
    return str(path.relative_to(ROOT))


def code_texts(text):
    """What the reader is told to type or read literally: fenced blocks and inline `code` spans."""
    fenced = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M)
    inline = re.findall(r"`([^`\n]+)`", re.sub(r"^```.*?^```", "", text, flags=re.S | re.M))
    return fenced + inline


def anchors(path):
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    seen, result = {}, set()
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def links(path):
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    text = re.sub(r"`[^`\n]+`", "", text)  # `model[:2](x)` is code, not a link
    return re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", text)


@pytest.mark.parametrize("doc", DOCS, ids=doc_id)
def test_relative_links_resolve(doc):
    broken = []
    for target in links(doc):
        if re.match(r"[a-z]+:", target):  # https:, mailto: ...
            continue
        file_part, _, anchor = target.partition("#")
        linked = (doc.parent / file_part).resolve() if file_part else doc
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading with anchor #{anchor} in {linked.name}")
    assert not broken, f"{doc_id(doc)}: " + "; ".join(broken)


def makefile_targets():
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return {name for line in re.findall(r"^([\w][\w .-]*):(?!=)", text, flags=re.M) for name in line.split()}


@pytest.mark.parametrize("doc", DOCS, ids=doc_id)
def test_make_targets_exist(doc):
    named = set()
    for code in code_texts(doc.read_text(encoding="utf-8")):
        named.update(re.findall(r"(?:^|[\s;&|(])make\s+([a-z][\w-]*)", code))
    missing = sorted(named - makefile_targets())
    assert not missing, f"{doc_id(doc)} names make targets the Makefile lacks: {missing}"


def params_paths():
    """Every key path in params.yaml, leaves and the mappings above them: data, data.synthetic, data.synthetic.n."""
    paths = set()

    def walk(node, prefix):
        for key, value in node.items():
            path = f"{prefix}{key}"
            paths.add(path)
            if isinstance(value, dict):
                walk(value, f"{path}.")

    walk(yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8")), "")
    return paths


@pytest.mark.parametrize("doc", DOCS, ids=doc_id)
def test_params_keys_exist(doc):
    roots = "|".join(PARAM_ROOTS)
    key = re.compile(rf"(?<![\w./\-$])((?:{roots})(?:\.[a-z_][a-z0-9_]*)+)")
    named = set()
    for code in code_texts(doc.read_text(encoding="utf-8")):
        for line in code.splitlines():
            if "error:" in line:  # a mistake's message quotes the misspelt key (train.lr_rate) on purpose
                continue
            named.update(k for k in key.findall(line) if k.rsplit(".", 1)[1] not in FILE_SUFFIXES)
    missing = sorted(named - params_paths())
    assert not missing, f"{doc_id(doc)} names params keys params.yaml lacks: {missing}"


def test_docs_files_cited_in_code_exist():
    cited = set()
    for source in [*ROOT.glob("stages/*.py"), *ROOT.glob("tools/*.py"), *ROOT.glob("tests/*.py"), ROOT / "Makefile"]:
        for name in re.findall(r"\bdocs/([\w.-]+\.md)\b", source.read_text(encoding="utf-8")):
            if not (ROOT / "docs" / name).exists():
                cited.add(f"{source.relative_to(ROOT)}: docs/{name}")
    assert not cited, f"code cites docs files that do not exist: {sorted(cited)}"


def test_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; the depth belongs in docs/"
