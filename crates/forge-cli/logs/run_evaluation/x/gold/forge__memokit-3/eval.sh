#!/bin/bash
set -uo pipefail
cd /testbed
git -c core.fileMode=false diff --stat 829f267b4fbc9d7ababf7061c2b51eb82443961d
restore() {
  for f in "$@"; do
    if git cat-file -e 829f267b4fbc9d7ababf7061c2b51eb82443961d:"$f" 2>/dev/null; then git checkout -q 829f267b4fbc9d7ababf7061c2b51eb82443961d -- "$f"; else rm -rf -- "$f"; fi
  done
}
restore 'tests/test_ttl.py'
find . -name '__pycache__' -type d -prune -exec rm -rf {} + 2>/dev/null
git apply --verbose - <<'EOF_114329324912' || { echo '>>>>> Tests Errored'; exit 1; }
diff --git a/tests/test_ttl.py b/tests/test_ttl.py
index ced4b5d..636e922 100644
--- a/tests/test_ttl.py
+++ b/tests/test_ttl.py
@@ -51,3 +51,18 @@ def test_lru_eviction_still_applies():
 def test_bad_ttl():
     with pytest.raises(ValueError):
         TTLCache(ttl=0)
+
+
+def test_caches_keep_their_own_timestamps():
+    clock = FakeClock()
+    first = TTLCache(ttl=10, clock=clock)
+    second = TTLCache(ttl=10, clock=clock)
+    first["k"] = 1
+    clock.now += 8
+    second["k"] = 2
+    clock.now += 5
+    assert first.get("k") is None
+    assert second.get("k") == 2
+    first["a"] = 1
+    second["b"] = 2
+    assert first.get("a") == 1 and "a" in first
EOF_114329324912
: '>>>>> Start Test Output'
echo '>>>>> Start Test Output'
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 python3 -c 'import os, sys, pytest; rc = pytest.main(sys.argv[1:]); sys.stdout.flush(); sys.stderr.flush(); os._exit(int(rc))' -rA -p no:cacheprovider 'tests/test_ttl.py'
rc=$?
echo '>>>>> End Test Output'
restore 'tests/test_ttl.py'
exit $rc
