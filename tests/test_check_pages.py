"""tools/check_pages.py on tiny hand-written books: each kind of problem is reported, the exit codes."""
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/usr/bin/chromium").is_file(),
                                reason="needs Debian's chromium: run tools/install_browser.sh")
pytest.importorskip("playwright", reason="needs playwright (requirements.txt): run tools/setup.sh")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "check_pages.py"
MATHJAX = ROOT / "book" / "_static" / "mathjax"
PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>body {{ margin: 0 }} article {{ width: 600px; max-width: 100% }}</style></head>
<body><nav><a href="index.html">{title}</a></nav>
<main><article class="bd-article"><h1>{title}</h1>{body}</article></main></body></html>
"""
CLEAN = {"index.html": ("Start", "<p>Nothing wrong here.</p><table><tr><td>1</td><td>2</td></tr></table>")}
WIDE = {**CLEAN, "wide.html": ("Wide", '<div style="overflow-x: auto"><table style="width: 3000px"><tr><td>x</td></tr>'
                                       '</table></div>')}  # in its scrolling box, as the theme puts a table
BROKEN = {
    **WIDE,
    "console.html": ("Console", "<script>console.error('boom from the test'); undefinedFunction();</script>"),
    "math.html": ("Math", r"<p>Let \(x\) be small.</p>"),
    "remote.html": ("Remote", '<img src="http://example.invalid/pixel.png" alt="">'),
    "title.html": (r"The threshold \(\mathcal{T}\)", "<p>Text.</p>"),
    "scrolls.html": ("Scrolls", '<p><code style="white-space: nowrap">' + "results/" * 400 + "</code></p>"),
}


def run(*args) -> subprocess.CompletedProcess:
    """Run the script with args."""
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def check(pages: dict, folder: Path, *args) -> subprocess.CompletedProcess:
    """Write pages {name: (title, body)} into folder and run the script on it."""
    for name, (title, body) in pages.items():
        (folder / name).write_text(PAGE.format(title=title, body=body))
    return run(folder, *args)


def test_each_problem_is_reported(tmp_path):
    result = check(BROKEN, tmp_path)
    lines = result.stdout.splitlines()
    assert result.returncode == 1, result.stdout + result.stderr
    assert "console.html: console error: boom from the test" in lines
    assert any(line.startswith("console.html: page error:") and "undefinedFunction" in line for line in lines)
    assert any(line.startswith("math.html: unrendered math:") and r"\(x\)" in line for line in lines)
    assert "remote.html: network request: http://example.invalid/pixel.png" in lines
    assert not any(line.startswith("remote.html: failed request") for line in lines)  # counted once
    assert any(line.startswith("title.html: tex in title: <title>:") for line in lines)
    assert any(line.startswith("title.html: tex in title: navigation:") for line in lines)
    assert any(line.startswith("wide.html: wide table (warning): table 1") and "in a 600px column" in line
               and "3000px" in line for line in lines)
    assert any(line.startswith("scrolls.html: page wider than the screen:") for line in lines)
    assert not any(line.startswith("index.html") for line in lines)
    assert lines[-1] == "7 pages checked, 8 problems, 1 warnings"


def test_what_a_reader_must_not_see_is_reported(tmp_path):
    (tmp_path / "notebooks").mkdir()
    output = '<div class="cell_output"><div class="output text_plain"><pre>{}</pre></div></div>'
    pixel = "data:image/gif;base64,R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw=="
    pages = {
        "index.html": CLEAN["index.html"],
        "nan.html": ("Missing", output.format("threshold NaN")),
        "glue.html": ("Glue", "<p>The FID is {glue:text}`tab_fid`.</p>"),
        "warn.html": ("Warn", output.format("UserWarning: something was clipped")),
        "stderr.html": ("Stderr", '<div class="output stderr"><pre>loading</pre></div>'),
        "path.html": ("Path", output.format("PosixPath('/work/main/results/x.csv')")),
        "repr.html": ("Repr", output.format("&lt;Figure size 640x480 with 1 Axes&gt;")),
        "hidden.html": ("Hidden", '<details><summary>code</summary><div class="cell_input"><pre>float("nan")</pre>'
                                  '</div></details><div class="cell_input"><pre>x = float("nan")</pre></div>'),
        "notebooks/chapter.html": ("Chapter", '<table><tr><td>1</td></tr></table>'
                                              '<table><caption><span class="caption-number">Table 1.1 </span>'
                                              'Ours</caption><tr><td>2</td></tr></table>'
                                              f'<figure><img src="{pixel}" alt="A plot"><figcaption>'
                                              '<span class="caption-number">Fig. 1.1 </span>A plot</figcaption></figure>'
                                              f'<img src="{pixel}" alt="A stray image">'),
    }
    result = check(pages, tmp_path)
    lines = result.stdout.splitlines()
    assert any(line.startswith("nan.html: missing value:") and "threshold NaN" in line for line in lines)
    assert any(line.startswith("glue.html: unrendered glue:") for line in lines)
    assert any(line.startswith("warn.html: warning in output:") for line in lines)
    assert "stderr.html: error or warning stream: loading" in lines
    assert any(line.startswith("path.html: absolute path:") and "/work/main/results/x.csv" in line for line in lines)
    assert any(line.startswith("repr.html: figure repr:") for line in lines)
    assert "notebooks/chapter.html: unnumbered table or figure: table: 1" in lines
    assert "notebooks/chapter.html: unnumbered table or figure: image: A stray image" in lines
    assert not any(line.startswith(("hidden.html", "index.html")) for line in lines), "code source is not read"
    assert lines[-1] == "9 pages checked, 8 problems, 0 warnings", result.stdout


def test_clean_book_passes(tmp_path):
    result = check(CLEAN, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == "1 pages checked, 0 problems, 0 warnings\n"


def test_wide_tables_warn_or_fail(tmp_path):
    warned = check(WIDE, tmp_path)
    assert warned.returncode == 0 and "wide.html: wide table (warning):" in warned.stdout
    failed = check(WIDE, tmp_path, "--fail-on-wide-tables", "--viewport", "390x844")
    assert failed.returncode == 1 and "wide.html: wide table: table 1" in failed.stdout
    assert failed.stdout.splitlines()[-1] == "2 pages checked, 1 problems, 0 warnings"


@pytest.mark.skipif(not MATHJAX.is_dir(), reason="needs the book's MathJax: run tools/fetch_mathjax.sh")
def test_math_is_checked_after_mathjax(tmp_path):
    (tmp_path / "mathjax").symlink_to(MATHJAX)
    head = '<script defer src="mathjax/tex-svg-full.js"></script>'
    body = r"<p>Fine \(x^2\), double exponent \(x^1^2\), undefined \(\foo\), unbalanced \(\frac{1}{\)</p>"
    result = check({"index.html": ("Math", head + body)}, tmp_path)
    assert result.stdout.splitlines() == [
        r'index.html: unrendered math: ", unbalanced \(\frac{1}{\)"',  # MathJax finds no end: left as TeX
        "index.html: mathjax error: Double exponent: use braces to clarify",
        r"index.html: mathjax error: undefined macro \foo",
        "1 pages checked, 3 problems, 0 warnings"]


def test_redirect_stub_must_lead_to_a_page(tmp_path):
    stub = '<meta http-equiv="Refresh" content="0; url=book/intro.html" />'
    (tmp_path / "index.html").write_text(stub)
    result = run(tmp_path)
    assert result.returncode == 1 and "index.html: broken redirect: book/intro.html" in result.stdout


def test_folder_without_book_is_a_one_line_error(tmp_path):
    result = run(tmp_path / "missing")
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and "no index.html" in result.stderr


def test_missing_browser_names_the_install_script(tmp_path):
    (tmp_path / "index.html").write_text(PAGE.format(title="Start", body=""))
    code = (f"import sys, pathlib; sys.path.insert(0, {str(SCRIPT.parent)!r}); import check_pages; "
            f"check_pages.CHROMIUM = pathlib.Path('/nonexistent/chromium'); "
            f"sys.exit(check_pages.main([{str(tmp_path)!r}]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    assert "tools/install_browser.sh" in result.stderr
