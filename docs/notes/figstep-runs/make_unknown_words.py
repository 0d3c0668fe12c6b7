"""Writes training/miniature/data/unknown_words.txt: real English-looking words for unknown cards (issue 23).

Source: the Qwen BPE ranks (`dashscope/resources/qwen.tiktoken`, Apache-2.0; pip install dashscope), whole-word
tokens of 4-10 lowercase letters in rank order (roughly: most frequent first). Excluded: any word sharing its
first five letters with a word of the phrase table, the held-out unknown pools (probes.py), FigStep's SafeBench
instructions and questions (both CSVs) or the words the miniature models speak (their tokenizer's vocabulary), so
no evaluation word, nor an inflection of one, is ever drawn on a training card; and a list of offensive stems
passed on the command line (not kept in the repository).
usage: python docs/notes/figstep-runs/make_unknown_words.py N [stem ...]
"""
import base64
import csv
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from tests.real_qwen import qwen_ranks_file  # noqa: E402
from training.miniature import probes, world  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
words = lambda text: {w.strip(".,?!'\"()").lower() for w in text.split()}  # noqa: E731
evaluation = set().union(*(words(p.phrase) for p in world.load_phrases()))
evaluation |= set(probes.HELDOUT_VERBS + probes.HELDOUT_NOUNS + probes.HELDOUT_ADJS)
for name in ("safebench.csv", "SafeBench-Tiny.csv"):
    for row in csv.DictReader(open(ROOT / "assets" / "datasets" / "figstep" / name)):
        evaluation |= words(row["instruction"]) | words(row["question"])
vocab = json.loads((ROOT / "assets" / "models" / "mini-base" / "tokenizer.json").read_text())["model"]["vocab"]
evaluation |= {t[1:].lower() for t in vocab if t.startswith("Ġ")}
stems = {w[:5] for w in evaluation if w}
blocked = [s.lower() for s in sys.argv[2:]]
ranked = []
for line in Path(qwen_ranks_file()).read_bytes().splitlines():
    token, rank = line.split()
    text = base64.b64decode(token).decode("utf-8", "replace")
    if re.fullmatch(r" [a-z]{4,10}", text):
        ranked.append((int(rank), text[1:]))
keep = [w for _, w in sorted(ranked) if w[:5] not in stems and not any(b in w for b in blocked)][: int(sys.argv[1])]
header = __doc__.split("\n\n")[0].replace("Writes training/miniature/data/unknown_words.txt: ", "")
out = ROOT / "training" / "miniature" / "data" / "unknown_words.txt"
out.write_text("# " + header + "\n# Made by docs/notes/figstep-runs/make_unknown_words.py (see its docstring for the exclusions).\n"
               + "\n".join(keep) + "\n")
print(len(keep), "words;", len(ranked), "candidates")
