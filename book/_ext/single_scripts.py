"""A Sphinx extension of the book: each page's scripts once.

Sphinx 7.4 lists an inline script that an extension registers after the builder started twice (once
with the file name None, once with ''), so sphinx-thebe's ``const THEBE_JS_URL = ...`` appeared twice
in every page's head and the second declaration was a JavaScript error in the reader's browser
(tools/check_pages.py found it). This keeps the first of equal scripts.
"""


def drop_repeated_scripts(app, pagename, templatename, context, doctree):
    seen, kept = set(), []
    for script in context.get("script_files", []):
        key = (script.filename or "", script.priority, tuple(sorted(script.attributes.items())))
        if key not in seen:
            seen.add(key)
            kept.append(script)
    context["script_files"][:] = kept


def setup(app):
    app.connect("html-page-context", drop_repeated_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
