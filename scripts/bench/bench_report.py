"""Provenance lines that open every benches/results/*.md a CPU bench script writes: the machine,
the date and commit (marked when the tree had uncommitted changes), and the load around the run.
Imported by the bench scripts' report snippets (`sys.path.insert(0, "scripts/bench")`)."""
import datetime
import subprocess


def _run(*command):
    return subprocess.run(command, capture_output=True, text=True).stdout.strip()


def provenance(load_before, load_after):
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    dirty = _run("git", "status", "--porcelain", "--untracked-files=no")
    return "\n".join([
        f"- Machine: {cpu}, {_run('nproc')} cores, no GPU",
        f"- Date: {datetime.date.today()}; commit {_run('git', 'rev-parse', '--short', 'HEAD')}{' (+ uncommitted changes)' if dirty else ''}",
        f"- Load average before/after: {load_before} / {load_after}",
    ])
