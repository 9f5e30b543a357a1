#!/bin/bash
set -uo pipefail
cd /testbed
git -c core.fileMode=false diff --stat 63b2ea083d19cf9bb2b0a4d9f1c80ec172c42dab
restore() {
  for f in "$@"; do
    if git cat-file -e 63b2ea083d19cf9bb2b0a4d9f1c80ec172c42dab:"$f" 2>/dev/null; then git checkout -q 63b2ea083d19cf9bb2b0a4d9f1c80ec172c42dab -- "$f"; else rm -rf -- "$f"; fi
  done
}
restore 'tests/test_toposort.py'
find . -name '__pycache__' -type d -prune -exec rm -rf {} + 2>/dev/null
git apply --verbose - <<'EOF_114329324912' || { echo '>>>>> Tests Errored'; exit 1; }
diff --git a/tests/test_toposort.py b/tests/test_toposort.py
index 4089577..c0288b0 100644
--- a/tests/test_toposort.py
+++ b/tests/test_toposort.py
@@ -27,3 +27,10 @@ def test_cycle_raises_with_the_cycle():
     with pytest.raises(CycleError) as info:
         toposort(g)
     assert info.value.cycle == ["a", "b", "c", "a"]
+
+
+def test_graph_is_unchanged_by_sorting():
+    g = Graph({"app": ["lib"], "lib": ["core"]})
+    assert toposort(g) == ["core", "lib", "app"]
+    assert toposort(g) == ["core", "lib", "app"]
+    assert g.edges() == [("app", "lib"), ("lib", "core")]
EOF_114329324912
: '>>>>> Start Test Output'
echo '>>>>> Start Test Output'
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 python3 -c 'import os, sys, pytest; rc = pytest.main(sys.argv[1:]); sys.stdout.flush(); sys.stderr.flush(); os._exit(int(rc))' -rA -p no:cacheprovider 'tests/test_toposort.py'
rc=$?
echo '>>>>> End Test Output'
restore 'tests/test_toposort.py'
exit $rc
