"""No number typed by hand in the book's prose (issue 11, item 6).

Every markdown cell of notebooks/*.ipynb and every book/*.md page is reduced to its prose: MyST roles
with their contents (``{glue:text}``, ``{glue}``, ``{cite}``, ``{doc}``, ...), math, code spans and
fenced code blocks, link targets, MyST targets ``(label)=``, HTML comments and list markers are
removed. A digit left over is a number typed by hand, unless it belongs to one of the few non-results
of ALLOWED below. A number in inline math counts as a formula, except where it is a value given to a
symbol (``$p = 0.3$``, ``$G = 4$``, ``$m \\le 2$``; 0 and 1 are mathematical constants there) or where
the math is nothing but a number (``$0.02$``, ``$10^{-4}$``).

A measured or a paper number (35.7M, 0.3, 100K, 64×64, 1 %) must come from a ``{glue:text}`` of a
value computed in a notebook (from its parameters, the library, its results or ``paper_tables.csv``).
"""
import json
import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Non-results: each match is removed from the prose before digits are looked for. Keep this list short.
ALLOWED = [
    # References to the structure of a paper or of this book: "Eq. 3", "Table 1", "Section 5.4",
    # "Algorithm 1", "Figure 4's", "chapter 8". A singular noun takes one number (with sub-numbers).
    re.compile(r"\b(?:Eq\.|Equation|Table|Figure|Fig\.|Section|Algorithm|Appendix|[Cc]hapter|line)\s+\d+(?:\.\d+)*\b"),
    # The same in the plural, with a list or a range: "Tables 2 and 3", "Tables 1-5", "Figures 1/4", "lines 5-9".
    re.compile(r"\b(?:Eqs\.|Equations|Tables|Figures|Sections|Chapters|chapters|lines)\s+\d+(?:\.\d+)*"
               r"(?:(?:\s*[-–/]\s*|\s+(?:and|or|to)\s+)\d+(?:\.\d+)*)+\b"),
    # Line numbers of a source file, also listed with commas: "(`runners/diffusion.py`, lines 7, 17, 58-75)".
    re.compile(r"\blines\s+\d+(?:\s*[-–]\s*\d+)?(?:,\s*\d+(?:\s*[-–]\s*\d+)?)+(?:\s+and\s+\d+(?:\s*[-–]\s*\d+)?)?\b"),
    # Publication years, in a citation only: "NeurIPS 2023", "CVPR 2024", "et al., 2020".
    re.compile(r"\b(?:NeurIPS|CVPR|ICCV|ECCV|ICLR|ICML|AAAI|arXiv|et al\.,?)\s+(?:19|20)\d\d\b"),
    # Names that contain digits: datasets and models (CIFAR-10, ImageNet-1K, Inception-v3, CompVis' cin256-v2)
    # and hash functions (sha256, MD5).
    re.compile(r"\b(?:CIFAR-10|CIFAR-100|ImageNet-1K|Inception-v3|cin256(?:-v2)?|sha256|SHA-256|MD5)\b"),
    # Version tags: Stable Diffusion v1.4, SD-v1.4, a repository's v0.0.1 release.
    re.compile(r"\bv\d+(?:\.\d+)+\b"),
    # Versions of software, after the package's name: "Torch-Pruning 1.4.1", "Torch-Pruning 1.x", "MathJax 3".
    re.compile(r"\b(?:Torch-Pruning|MathJax)\s+\d+(?:\.(?:\d+|x))*\b"),
    # This book's chapter files: "02_loss_and_threshold", "10_table3_latent.ipynb".
    re.compile(r"\b\d\d_[a-z][a-z0-9_]*(?:\.ipynb)?\b"),
]

# Markup whose contents are not prose, removed in this order.
HTML_COMMENT = re.compile(r"<!--.*?-->", re.S)
FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,})(?P<info>[^\n]*)\n(?P<body>.*?)^(?P=fence)[ \t]*$", re.S | re.M)
CODE_DIRECTIVES = re.compile(r"^\s*(?:\w+|\{(?:math|code|code-block|code-cell|literalinclude|glue:math)\}.*)?\s*$")
DIRECTIVE_OPTION = re.compile(r"^:[\w-]+:.*$", re.M)
DISPLAY_MATH = re.compile(r"\$\$.+?\$\$", re.S)
ROLE = re.compile(r"\{[\w:.-]+\}(?P<ticks>`+).+?(?P=ticks)", re.S)  # {glue:text}`key:.1f`, {cite:p}`x`, {doc}`..`
CODE_SPAN = re.compile(r"(?P<ticks>`+).+?(?P=ticks)", re.S)
INLINE_MATH = re.compile(r"(?<![\\$])\$(?!\s)(?P<tex>(?:[^$\n]|\n(?![ \t]*\n))+?)(?<![\s\\])\$(?!\d)")
LINK_TARGET = re.compile(r"(?<=\])\([^)\s]*(?:\s+\"[^\"]*\")?\)|<(?:https?|mailto):[^>]*>")
MYST_TARGET = re.compile(r"^\s*\([\w:./-]+\)=\s*$", re.M)
LIST_MARKER = re.compile(r"^(?P<indent>\s*)\d+[.)](?=\s)", re.M)

# A value inside inline math: a number after a relation (not 0 or 1), or math that is only a number.
NUMBER = r"-?\d+(?:\.\d+)?(?:\^\{?-?\d+\}?)?"
MATH_VALUE = re.compile(r"(?:=|<|>|\\[lg]eq?|\\approx|\\sim)\s*(?P<value>" + NUMBER + r")(?![\w.])")
MATH_ONLY_NUMBER = re.compile(r"^\s*" + NUMBER + r"\s*$")


def _blank(match: re.Match) -> str:
    """Replace a match by spaces and its newlines, so that positions and line breaks are kept."""
    return re.sub(r"[^\n]", " ", match.group(0))


def _strip_fence(match: re.Match) -> str:
    if CODE_DIRECTIVES.match(match.group("info")):
        return _blank(match)  # code, or a math directive: no prose
    body = DIRECTIVE_OPTION.sub(_blank, match.group("body"))  # another directive ({note}, ...): its body is prose
    return " " * len(match.group("fence") + match.group("info")) + "\n" + body + " " * len(match.group("fence"))


def _strip_inline_math(match: re.Match) -> str:
    tex = match.group("tex")
    values = [m.group("value") for m in MATH_VALUE.finditer(tex) if m.group("value").lstrip("-") not in ("0", "1")]
    if values or (MATH_ONLY_NUMBER.match(tex) and tex.strip().lstrip("-") not in ("0", "1")):
        return match.group(0).replace("$", " ")  # keep it: the checker reports its digits
    return _blank(match)


def prose(markdown: str) -> str:
    """The markdown with everything that is not prose replaced by spaces (same length, same lines)."""
    text = HTML_COMMENT.sub(_blank, markdown)
    text = FENCE.sub(_strip_fence, text)
    text = DISPLAY_MATH.sub(_blank, text)
    text = ROLE.sub(_blank, text)
    text = CODE_SPAN.sub(_blank, text)
    text = INLINE_MATH.sub(_strip_inline_math, text)
    text = LINK_TARGET.sub(_blank, text)
    text = MYST_TARGET.sub(_blank, text)
    text = LIST_MARKER.sub(lambda m: m.group("indent") + " " * (len(m.group(0)) - len(m.group("indent"))), text)
    for allowed in ALLOWED:
        text = allowed.sub(_blank, text)
    return text


def hand_typed_numbers(markdown: str) -> list[str]:
    """Each digit run left in the prose, with its line (in the cell or page) and the original text around it."""
    text = prose(markdown)
    found = []
    for match in re.finditer(r"\d+(?:[.,]\d+)*(?:[×x]\d+(?:[.,]\d+)*)*", text):
        start, end = match.span()
        context = markdown[max(0, start - 40):end + 40].replace("\n", " ")
        found.append(f"line {markdown.count(chr(10), 0, start) + 1}: {match.group(0)!r} in …{context}…")
    return found


def markdown_sources() -> list[tuple[str, str]]:
    """(where, markdown) for every markdown cell of the notebooks and every book page."""
    sources = []
    for path in sorted((REPO_ROOT / "notebooks").glob("*.ipynb")):
        notebook = json.loads(path.read_text(encoding="utf-8"))
        for index, cell in enumerate(notebook["cells"]):
            if cell["cell_type"] == "markdown":
                source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
                sources.append((f"notebooks/{path.name}, cell {index}", source))
    for path in sorted((REPO_ROOT / "book").glob("*.md")):
        sources.append((f"book/{path.name}", path.read_text(encoding="utf-8")))
    return sources


def test_no_number_is_typed_by_hand_in_the_prose():
    sources = markdown_sources()
    assert any(where.startswith("notebooks/") for where, _ in sources) and any(
        where.startswith("book/") for where, _ in sources)
    offenders = [f"{where}: {found}" for where, markdown in sources for found in hand_typed_numbers(markdown)]
    assert not offenders, (f"{len(offenders)} numbers typed by hand; glue them from a notebook's code "
                           "({glue:text}`key`) or rephrase:\n" + "\n".join(offenders))


@pytest.mark.parametrize("text", [
    "the 35.7M-parameter CIFAR-10 model",
    "Diff-Pruning at $p = 0.3$, $\\mathcal{T} = 0.05$ runs first",
    "the scored outputs are latents (64×64×3 for the CelebA-HQ LDM)",
    "**Within 1 % of the paper",
    "FID 5.29 (100K steps)",
    "from $10^{-4}$ to $0.02$",
    "has $G = 4$ groups",
    "Table 1 and 100 DDIM steps",
    "Tables 2 and 3, 4 epochs",
    "batch 128, Adam at 2e-4, EMA 0.9999, dropout 0.1",
    "the paper's v1 ratio of 0.3",
    "a model from 2023",
    "## Why not the paper's 5%?",
    "{glue:text}`kept` of 1000 timesteps",
    "```{note}\nthe 31 operators\n```",
])
def test_the_checker_finds_a_bare_number(text):
    assert hand_typed_numbers(text), text


@pytest.mark.parametrize("text", [
    "FID {glue:text}`tab1_fid:.2f` after {glue:text}`/notebooks/05_table1_criteria.ipynb::steps:d` steps",
    "as Eq. 3 shows (Eq. 10), Table 1's rows, Tables 2 and 3, Tables 1-5 and Figures 1-5, Figures 1/4",
    "Section 5.4, Algorithm 1, lines 5-9, Appendix B, chapter 8, Chapters 1 and 2, (line 20; lines 7, 17, 58-75)",
    "Fang et al., 2023 (NeurIPS 2023), LD-Pruner (CVPR 2024)",
    "CIFAR-10, ImageNet-1K, Inception-v3, Stable Diffusion v1.4, SD-v1.4, cin256-v2, cin256's U-Net, sha256, checked by MD5",
    "Torch-Pruning 1.4.1 and later; Torch-Pruning 1.x; MathJax 3; the repository's v0.0.1 release",
    "see 02_loss_and_threshold and 10_table3_latent.ipynb",
    "$$x_{t-1} = \\frac{1}{\\sqrt{\\alpha_t}} x_t + 0.5$$ and $\\epsilon_\\theta(x_t, t)$ with $2C$ outputs",
    "$t = 0, 1, 2, \\dots$ with $\\mathcal{T} = 0$, $s^2 = 1$ and $1/\\sqrt{\\alpha} > 1$",
    "```{math}\ng(t) = 2\n```\n```bash\npapermill -p batch_size 16\n```\n`ratio` = `0.3` in code",
    "{cite:p}`fang2023` {doc}`Figure 5 </notebooks/03_figure5_ssim_vs_timesteps>` [paper](https://arxiv.org/abs/2305.10924)",
    "(sec-3)=\n# Title\n<!-- 35.7M in a comment -->\n1. first\n2. second\n",
])
def test_the_checker_allows_non_results(text):
    assert not hand_typed_numbers(text), hand_typed_numbers(text)
