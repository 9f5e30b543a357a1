"""forge's line tracer (`forge tasks label --coverage on`).

Installed into the task image's site-packages as `forge_trace.py` with a `forge_trace.pth` that
imports it, so it starts in every Python process of the test run, subprocesses included. It does
nothing unless FORGE_TRACE_OUT is set. Then it records, for the files FORGE_TRACE_FILES names
(os.pathsep-separated absolute paths), every line that runs, appending `path<TAB>line` to
FORGE_TRACE_OUT/<pid>.lines the first time a process runs that line (nothing is left to an exit
handler: pytest runners may leave with os._exit).
"""
import os
import sys


def _install():
    out = os.environ.get("FORGE_TRACE_OUT")
    if not out:
        return
    wanted = set()
    for name in os.environ.get("FORGE_TRACE_FILES", "").split(os.pathsep):
        if name:
            wanted.add(os.path.realpath(name))
    known = {}
    seen = set()

    def resolve(name):
        real = known.get(name)
        if real is None:
            try:
                real = os.path.realpath(name)
            except Exception:
                real = ""
            if real not in wanted:
                real = ""
            known[name] = real
        return real

    def hit(path, line):
        key = (path, line)
        if key in seen:
            return
        seen.add(key)
        try:
            with open(os.path.join(out, "%d.lines" % os.getpid()), "a") as fh:
                fh.write("%s\t%d\n" % (path, line))
        except OSError:
            pass

    def local(frame, event, arg):
        if event == "line":
            path = resolve(frame.f_code.co_filename)
            if path:
                hit(path, frame.f_lineno)
        return local

    def global_trace(frame, event, arg):
        if resolve(frame.f_code.co_filename):
            return local
        return None

    sys.settrace(global_trace)
    import threading

    threading.settrace(global_trace)


_install()
