"""report/answers.md: the student's own words for the report (report/build.py reads it).

The file holds the title-page fields (name, course, collaborators, generative-AI use) as
`field: value` lines, then one `## <item> <title>` heading per assignment item; text under a heading
replaces the draft the report generates for that item. HTML comments (<!-- ... -->) are guidance
and are ignored. build.py creates the file with every heading when it is missing and never
overwrites it.
"""
import re
from pathlib import Path

import files

FIELDS = {"name": "Name", "course": "Course", "collaborators": "Collaborators", "generative-ai": "Generative AI use"}

HEADER = """# My answers for the convlens report

<!--
How this file works
- report/build.py reads it on every build and never overwrites it: edit freely, then run
  python report/build.py
- Title page: fill in the four fields below (one line each). Both assignments require you to
  declare collaborators and any use of generative AI; write "none" if there were none.
- Your own words: under any "## <item>" heading below, write the text that should stand in the
  report for that item. It replaces the draft the report generates from your run's numbers, and
  the report marks the item "written by the student". Leave a heading empty to keep the draft.
  Figures and tables of the item stay in either case.
- Plain text; a blank line starts a new paragraph. Comments like this one are ignored.
-->

name:
course:
collaborators:
generative-ai:
"""


def template(items: list) -> str:
    """The file's text for [(key, title, guidance)]."""
    parts = [HEADER]
    for key, title, guidance in items:
        parts.append(f"\n## {key} {title}\n<!-- {guidance} Leave empty to keep the generated draft. -->\n")
    return "".join(parts)


def ensure(path: Path, items: list) -> bool:
    """Write the template if `path` does not exist; True if it was written."""
    if path.exists():
        return False
    files.write_text(path, template(items))
    return True


def parse(text: str, keys) -> tuple[dict, dict]:
    """({field: value}, {item key: text}) from the file's text; empty values are left out.
    A heading whose first word is not an item key is ignored (with its text)."""
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    fields, answers, key, lines = {}, {}, None, []

    def close():
        body = "\n".join(lines).strip()
        if key and body:
            answers[key] = body

    for line in text.splitlines():
        heading = re.match(r"^##\s+(\S+)", line)
        if heading:
            close()
            key, lines = (heading.group(1) if heading.group(1) in keys else None), []
            continue
        field = re.match(r"^\s*([A-Za-z-]+)\s*:\s*(.*)$", line)
        if key is None and field and field.group(1).lower() in FIELDS:
            if field.group(2).strip():
                fields[field.group(1).lower()] = field.group(2).strip()
            continue
        if key is not None:
            lines.append(line)
    close()
    return fields, answers


def paragraphs(text: str) -> list:
    """Blank-line separated paragraphs, each with its line breaks joined."""
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]
