#!/bin/bash
set -uo pipefail
cd /testbed
git -c core.fileMode=false diff --stat 41a537e14abd8a00b0a28584ed9a8dd23e60c249
restore() {
  for f in "$@"; do
    if git cat-file -e 41a537e14abd8a00b0a28584ed9a8dd23e60c249:"$f" 2>/dev/null; then git checkout -q 41a537e14abd8a00b0a28584ed9a8dd23e60c249 -- "$f"; else rm -rf -- "$f"; fi
  done
}
restore 'tests/test_cycles.py'
find . -name '__pycache__' -type d -prune -exec rm -rf {} + 2>/dev/null
git apply --verbose - <<'EOF_114329324912' || { echo '>>>>> Tests Errored'; exit 1; }
diff --git a/tests/test_cycles.py b/tests/test_cycles.py
index 8c03385..8340fa6 100644
--- a/tests/test_cycles.py
+++ b/tests/test_cycles.py
@@ -16,3 +16,14 @@ def test_self_loop():
 def test_error_message():
     err = CycleError(["a", "b", "a"])
     assert str(err) == "dependency cycle: a -> b -> a" and err.cycle == ["a", "b", "a"]
+
+
+def test_shared_dependency_is_not_a_cycle():
+    diamond = Graph({"app": ["cli", "lib"], "cli": ["core"], "lib": ["core"]})
+    assert find_cycle(diamond) is None
+
+
+def test_cycle_behind_a_shared_dependency():
+    g = Graph({"app": ["cli", "lib"], "cli": ["core"], "lib": ["core", "plugins"],
+               "plugins": ["lib"]})
+    assert find_cycle(g) == ["lib", "plugins", "lib"]
EOF_114329324912
: '>>>>> Start Test Output'
echo '>>>>> Start Test Output'
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 python3 -c 'import os, sys, pytest; rc = pytest.main(sys.argv[1:]); sys.stdout.flush(); sys.stderr.flush(); os._exit(int(rc))' -rA -p no:cacheprovider 'tests/test_cycles.py'
rc=$?
echo '>>>>> End Test Output'
restore 'tests/test_cycles.py'
exit $rc
