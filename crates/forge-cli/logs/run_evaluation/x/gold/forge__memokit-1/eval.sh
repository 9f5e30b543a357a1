#!/bin/bash
set -uo pipefail
cd /testbed
git -c core.fileMode=false diff --stat a814b015c530e9d6c7a95ef0d5f6d1122b27537b
restore() {
  for f in "$@"; do
    if git cat-file -e a814b015c530e9d6c7a95ef0d5f6d1122b27537b:"$f" 2>/dev/null; then git checkout -q a814b015c530e9d6c7a95ef0d5f6d1122b27537b -- "$f"; else rm -rf -- "$f"; fi
  done
}
restore 'tests/test_lru.py'
find . -name '__pycache__' -type d -prune -exec rm -rf {} + 2>/dev/null
git apply --verbose - <<'EOF_114329324912' || { echo '>>>>> Tests Errored'; exit 1; }
diff --git a/tests/test_lru.py b/tests/test_lru.py
index c306d07..29d075f 100644
--- a/tests/test_lru.py
+++ b/tests/test_lru.py
@@ -44,3 +44,15 @@ def test_stats():
 def test_bad_maxsize():
     with pytest.raises(ValueError):
         LRUCache(0)
+
+
+def test_reading_an_entry_protects_it_from_eviction():
+    c = LRUCache(2)
+    c["a"] = 1
+    c["b"] = 2
+    assert c["a"] == 1
+    c["c"] = 3
+    assert "a" in c and "b" not in c
+    assert c.get("a") == 1
+    c["d"] = 4
+    assert c.keys() == ["a", "d"]
EOF_114329324912
: '>>>>> Start Test Output'
echo '>>>>> Start Test Output'
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 python3 -c 'import os, sys, pytest; rc = pytest.main(sys.argv[1:]); sys.stdout.flush(); sys.stderr.flush(); os._exit(int(rc))' -rA -p no:cacheprovider 'tests/test_lru.py'
rc=$?
echo '>>>>> End Test Output'
restore 'tests/test_lru.py'
exit $rc
