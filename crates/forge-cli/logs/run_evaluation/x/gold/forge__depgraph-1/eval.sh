#!/bin/bash
set -uo pipefail
cd /testbed
git -c core.fileMode=false diff --stat d08bd0c5e130cee1d472e4ba30ff2e0a6ab68c94
restore() {
  for f in "$@"; do
    if git cat-file -e d08bd0c5e130cee1d472e4ba30ff2e0a6ab68c94:"$f" 2>/dev/null; then git checkout -q d08bd0c5e130cee1d472e4ba30ff2e0a6ab68c94 -- "$f"; else rm -rf -- "$f"; fi
  done
}
restore 'tests/test_toposort.py'
find . -name '__pycache__' -type d -prune -exec rm -rf {} + 2>/dev/null
git apply --verbose - <<'EOF_114329324912' || { echo '>>>>> Tests Errored'; exit 1; }
diff --git a/tests/test_toposort.py b/tests/test_toposort.py
index 512b661..4089577 100644
--- a/tests/test_toposort.py
+++ b/tests/test_toposort.py
@@ -1,4 +1,6 @@
-from depgraph import Graph, levels, toposort
+import pytest
+
+from depgraph import CycleError, Graph, levels, toposort
 
 
 def test_dependencies_first():
@@ -18,3 +20,10 @@ def test_levels():
 
 def test_empty_graph():
     assert toposort(Graph()) == [] and levels(Graph()) == []
+
+
+def test_cycle_raises_with_the_cycle():
+    g = Graph({"a": ["b"], "b": ["c"], "c": ["a"], "d": []})
+    with pytest.raises(CycleError) as info:
+        toposort(g)
+    assert info.value.cycle == ["a", "b", "c", "a"]
EOF_114329324912
: '>>>>> Start Test Output'
echo '>>>>> Start Test Output'
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 python3 -c 'import os, sys, pytest; rc = pytest.main(sys.argv[1:]); sys.stdout.flush(); sys.stderr.flush(); os._exit(int(rc))' -rA -p no:cacheprovider 'tests/test_toposort.py'
rc=$?
echo '>>>>> End Test Output'
restore 'tests/test_toposort.py'
exit $rc
