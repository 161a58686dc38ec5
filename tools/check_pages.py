"""Open every page of the built book in headless Chromium and report what a reader would see go wrong.

Usage: .venv/bin/python tools/check_pages.py _build/html [--viewport 1280x900] [--fail-on-wide-tables]
                                                          [--screenshots DIR]
Per page: console errors, uncaught page errors, failed requests, any request off 127.0.0.1 (blocked:
the book must load nothing from the network), TeX left unrendered in the article once MathJax is done,
MathJax errors, raw TeX in the <title> or the navigation (titles must read right without MathJax); in
what a reader can read (visible text outside the code cells' source): NaN, an unrendered glue role, a
warning or traceback, and any stderr/error output; anywhere in the article: an absolute path of the
build machine, a matplotlib "<Figure size ...>"; on a chapter (notebooks/): a visible table or image
without a numbered caption; a page wider than the window; and visible tables wider than the text column
(warnings, or problems with --fail-on-wide-tables).
Prints `page: kind: detail` per finding and a summary; exits 1 on problems, 2 when it cannot run.
Needs Debian's chromium (tools/install_browser.sh) and playwright (requirements.txt); tools/setup.sh sets up both.
"""
import argparse
import functools
import re
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urljoin, urlsplit

try:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright
except ImportError:
    sync_playwright = None

CHROMIUM = Path("/usr/bin/chromium")
HOST = "127.0.0.1"
MATHJAX_TIMEOUT_MS = 20_000
REDIRECT = re.compile(r"""<meta\s+http-equiv=["']?refresh["']?\s+content=["']\d+;\s*url=([^"']+)["']""", re.I)

# Runs in the page once MathJax is done. The article is sphinx-book-theme's <article class="bd-article">
# (falling back to <main>/<article> for other themes); its content box is the text column.
PAGE_REPORT_JS = r"""() => {
  const article = ['article.bd-article', 'article', 'main'].map(s => document.querySelector(s)).find(Boolean);
  if (!article) return null;
  const skip = 'pre, code, script, style, textarea, mjx-container, .MathJax';
  const tex = [];
  const walker = document.createTreeWalker(article, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const parent = node.parentElement;
    if (parent.closest(skip) || !parent.checkVisibility()) continue;
    const text = node.textContent.replace(/\s+/g, ' ');
    const at = text.search(/\\\(|\\\)|\\\[|\\\]|\$\$/);
    if (at >= 0) tex.push(text.slice(Math.max(0, at - 30), at + 50).trim());
  }
  // MathJax 3 marks errors as <mjx-merror> (CHTML) or <g data-mml-node="merror"> (SVG), MathJax 2 as
  // .MathJax_Error; its noundefined extension shows an undefined macro as red text, not as an error.
  const mathErrors = [
    ...[...article.querySelectorAll('mjx-merror, .MathJax_Error, [data-mml-node="merror"]')]
      .map(el => el.getAttribute('data-mjx-error') || el.textContent.trim()),
    ...[...article.querySelectorAll('mjx-assistive-mml mtext[mathcolor="red"]')]
      .map(el => `undefined macro ${el.textContent}`),
  ];
  const scrollsInside = (el, top) => {
    for (let e = el.parentElement; e && e !== top; e = e.parentElement)
      if (/auto|scroll/.test(getComputedStyle(e).overflowX)) return true;
    return false;
  };
  // What a reader can read: visible text outside the code cells' source (collapsed code is not visible).
  const readable = [];
  const textWalker = document.createTreeWalker(article, NodeFilter.SHOW_TEXT);
  for (let node = textWalker.nextNode(); node; node = textWalker.nextNode()) {
    const parent = node.parentElement;
    if (parent.closest('script, style, .cell_input, mjx-container') || !parent.checkVisibility()) continue;
    readable.push(node.textContent);
  }
  const streams = [...article.querySelectorAll('.output.stderr, .output.traceback, .output.error')]
    .map(el => el.textContent.replace(/\s+/g, ' ').trim().slice(0, 80));
  const style = getComputedStyle(article);
  const column = article.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  const visible = [...article.querySelectorAll('table')].filter(table => table.checkVisibility());
  const unnumbered = [
    ...visible.filter(table => !table.caption?.querySelector('.caption-number')).map(table =>
      `table: ${table.textContent.replace(/\s+/g, ' ').trim().slice(0, 60)}`),
    ...[...article.querySelectorAll('img')].filter(img => img.checkVisibility()
      && !img.closest('figure')?.querySelector('figcaption .caption-number')).map(img => `image: ${img.alt || img.src}`),
  ];
  const tables = visible.map((table, i) => ({
    index: i + 1,
    label: (table.caption?.textContent || table.closest('section')?.querySelector('h1, h2, h3')?.textContent
            || '').replace(/\s+/g, ' ').replace(/#$/, '').trim().slice(0, 60),
    width: Math.ceil(Math.max(table.scrollWidth, table.getBoundingClientRect().width)),
    scrolls: scrollsInside(table, article),
  }));
  const page = {width: document.documentElement.scrollWidth, screen: window.innerWidth};
  return {tex, mathErrors, column: Math.floor(column), tables, readable: readable.join(''), streams,
          all: article.textContent, unnumbered, page};
}"""

# Titles as the HTML gives them, before MathJax touches the page: the page's own source, parsed again
# without running its scripts. Navigation is the sidebars, the header, the previous/next links and the
# print-only header of sphinx-book-theme.
TITLE_TEXTS_JS = r"""async () => {
  const html = await (await fetch(location.href)).text();
  const doc = new DOMParser().parseFromString(html, 'text/html');
  const nav = 'nav, header, .bd-sidebar-primary, .bd-sidebar-secondary, .prev-next-area, #jb-print-docs-body';
  const texts = [...doc.querySelectorAll(nav)].flatMap(region =>
    [...region.querySelectorAll('a, h1, h2, h3, h4, h5, h6')].map(el => ['navigation', el.textContent]));
  return [['<title>', doc.title], ...texts].map(([where, text]) => [where, text.replace(/\s+/g, ' ').trim()]);
}"""
RAW_TEX = re.compile(r"\\(?:[()\[\]]|[A-Za-z]+)")
# What a rendered page must not show a reader (in the readable text; paths and figure reprs anywhere in
# the article, collapsed code included).
READABLE_FINDINGS = {
    "missing value": re.compile(r"\b(?:NaN|nan)\b"),
    "unrendered glue": re.compile(r"\{glue(?::\w+)?\}|\bglue:(?:text|md|figure|any)\b"),
    "warning in output": re.compile(r"\b\w*Warning: |Traceback \(most recent call last\)"),
}
ANYWHERE_FINDINGS = {
    "absolute path": re.compile(r"(?<![\w.~])/(?:work|home|root|tmp|Users|mnt|var|opt|srv)/[^\s'\"<>)]*"),
    "figure repr": re.compile(r"<Figure size [^>]*>"),
}


class QuietHandler(SimpleHTTPRequestHandler):
    """Serve files without logging each request."""

    def log_message(self, format, *args):
        pass


def serve(folder: Path) -> ThreadingHTTPServer:
    """Serve folder on 127.0.0.1 on a free port from a daemon thread."""
    server = ThreadingHTTPServer((HOST, 0), functools.partial(QuietHandler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def pages_of(folder: Path) -> list:
    """The book's pages, relative to folder. _static/ holds the theme's Jinja macro files, not pages;
    genindex.html and search.html are pages a reader opens and are checked like the others."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.html")
                  if p.relative_to(folder).parts[0] != "_static")


def redirect_problems(folder: Path, name: str, html: str) -> list:
    """A redirect stub (index.html) has nothing to see; its target must exist and is checked as a page."""
    target = urljoin(name, REDIRECT.search(html).group(1).strip())
    if urlsplit(target).netloc or not (folder / urlsplit(target).path.lstrip("/")).is_file():
        return [("broken redirect", target)]
    return []


def check_page(browser, size: dict, url: str, screenshot: Path = None) -> tuple:
    """Load url as a first-time visitor (a fresh context, so that findings do not depend on the order
    of pages); return (problems, warnings) as lists of (kind, detail)."""
    problems, warnings, blocked = [], [], set()

    def route(r):
        if urlsplit(r.request.url).hostname == HOST:
            r.continue_()
        else:
            blocked.add(r.request.url)
            problems.append(("network request", r.request.url))
            r.abort()

    def on_console(msg):
        # Chromium repeats every failed load as "Failed to load resource"; those are reported, with
        # their URL, by the request handlers below.
        if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
            problems.append(("console error", msg.text))

    def on_response(response):
        if response.status >= 400:
            problems.append(("failed request", f"{response.url} (HTTP {response.status})"))

    def on_request_failed(request):
        if request.url not in blocked:
            problems.append(("failed request", f"{request.url} ({request.failure})"))

    context = browser.new_context(viewport=size)
    page = context.new_page()
    page.route("**/*", route)
    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append(("page error", error.message)))
    page.on("response", on_response)
    page.on("requestfailed", on_request_failed)
    try:
        page.goto(url, wait_until="load")
        mathjax_done = page.evaluate(
            """ms => window.MathJax?.startup?.promise ? Promise.race([
                 MathJax.startup.promise.then(() => true), new Promise(done => setTimeout(() => done(false), ms))])
               : true""", MATHJAX_TIMEOUT_MS)
        if not mathjax_done:
            problems.append(("mathjax timeout", f"not done after {MATHJAX_TIMEOUT_MS // 1000} s"))
        report = page.evaluate(PAGE_REPORT_JS)
        titles = page.evaluate(TITLE_TEXTS_JS)
        if screenshot:
            page.screenshot(path=screenshot, full_page=True)
    except PlaywrightError as error:
        problems.append(("load failed", str(error).splitlines()[0]))
        return problems, warnings
    finally:
        context.close()
    if report is None:
        problems.append(("no article", "no <article> or <main> element"))
        report = {"tex": [], "mathErrors": [], "tables": [], "column": 0, "readable": "", "streams": [], "all": "",
                  "unnumbered": [], "page": {"width": 0, "screen": 0}}
    problems += [("unrendered math", f'"{text}"') for text in report["tex"]]
    problems += [("mathjax error", error) for error in report["mathErrors"]]
    for kind, pattern in READABLE_FINDINGS.items():
        problems += [(kind, f'"{snippet(report["readable"], match)}"')
                     for match in pattern.finditer(report["readable"])]
    for kind, pattern in ANYWHERE_FINDINGS.items():
        problems += [(kind, f'"{snippet(report["all"], match)}"') for match in pattern.finditer(report["all"])]
    problems += [("error or warning stream", text) for text in report["streams"]]
    if report["page"]["width"] > report["page"]["screen"]:
        problems.append(("page wider than the screen", f'{report["page"]["width"]}px in a {report["page"]["screen"]}px '
                                                       "window: the reader scrolls sideways"))
    if urlsplit(url).path.split("/")[-2:-1] == ["notebooks"]:  # a chapter: every table and figure has a number
        problems += [("unnumbered table or figure", what) for what in report["unnumbered"]]
    problems += [("tex in title", f'{where}: "{text}"')
                 for where, text in dict.fromkeys(map(tuple, titles)) if RAW_TEX.search(text)]
    for table in report["tables"]:
        if table["width"] > report["column"]:
            where = "scrolls sideways in its box" if table["scrolls"] else "overflows the page"
            label = f' ("{table["label"]}")' if table["label"] else ""
            warnings.append(("wide table", f'table {table["index"]}{label} is {table["width"]}px wide in a '
                                           f'{report["column"]}px column ({where})'))
    return problems, warnings


def snippet(text: str, match) -> str:
    """The match with up to 30 characters either side, on one line."""
    return " ".join(text[max(0, match.start() - 30):match.end() + 30].split())


def viewport(text: str) -> dict:
    """Parse WIDTHxHEIGHT."""
    width, _, height = text.partition("x")
    if not (width.isdigit() and height.isdigit()):
        raise argparse.ArgumentTypeError(f"viewport must be WIDTHxHEIGHT, not {text!r}")
    return {"width": int(width), "height": int(height)}


def main(argv=None) -> int:
    """Check every page of the folder; print findings and a summary; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="the built book, e.g. _build/html")
    parser.add_argument("--viewport", type=viewport, default="1280x900", help="WIDTHxHEIGHT (1280x900)")
    parser.add_argument("--fail-on-wide-tables", action="store_true",
                        help="count tables wider than the text column as problems, not warnings")
    parser.add_argument("--screenshots", type=Path, metavar="DIR", help="save a full-page PNG per page")
    args = parser.parse_args(argv)
    if not (args.folder / "index.html").is_file():
        print(f"check_pages: no index.html in {args.folder}: build the book first", file=sys.stderr)
        return 2
    if sync_playwright is None or not CHROMIUM.is_file():
        print(f"check_pages: needs {CHROMIUM} and playwright: run tools/setup.sh (as root it installs chromium "
              "with tools/install_browser.sh)", file=sys.stderr)
        return 2
    if args.screenshots:
        args.screenshots.mkdir(parents=True, exist_ok=True)
    server = serve(args.folder)
    base = f"http://{HOST}:{server.server_address[1]}/"
    pages = pages_of(args.folder)
    n_problems = n_warnings = 0
    with sync_playwright() as playwright:
        # The resolver rule keeps Chromium's own background requests off the network as well.
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=[f"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE {HOST}"])
        for name in pages:
            html = (args.folder / name).read_text(errors="replace")
            if REDIRECT.search(html):
                problems, warnings = redirect_problems(args.folder, name, html), []
            else:
                shot = args.screenshots / (name.replace("/", "__")[:-5] + ".png") if args.screenshots else None
                problems, warnings = check_page(browser, args.viewport, base + name, shot)
            if args.fail_on_wide_tables:
                problems, warnings = problems + warnings, []
            for kind, detail in problems + [(f"{kind} (warning)", detail) for kind, detail in warnings]:
                print(f"{name}: {kind}: {' '.join(detail.split())}")
            n_problems += len(problems)
            n_warnings += len(warnings)
        browser.close()
    server.shutdown()
    print(f"{len(pages)} pages checked, {n_problems} problems, {n_warnings} warnings")
    return 1 if n_problems else 0


if __name__ == "__main__":
    sys.exit(main())
