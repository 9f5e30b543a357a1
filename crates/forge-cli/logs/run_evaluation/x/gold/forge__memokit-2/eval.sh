#!/bin/bash
set -uo pipefail
cd /testbed
git -c core.fileMode=false diff --stat 53440ec380601ca9f250951385183467faaa6c34
restore() {
  for f in "$@"; do
    if git cat-file -e 53440ec380601ca9f250951385183467faaa6c34:"$f" 2>/dev/null; then git checkout -q 53440ec380601ca9f250951385183467faaa6c34 -- "$f"; else rm -rf -- "$f"; fi
  done
}
restore 'tests/test_decorators.py'
find . -name '__pycache__' -type d -prune -exec rm -rf {} + 2>/dev/null
git apply --verbose - <<'EOF_114329324912' || { echo '>>>>> Tests Errored'; exit 1; }
diff --git a/tests/test_decorators.py b/tests/test_decorators.py
index 0957bb0..62cd2b9 100644
--- a/tests/test_decorators.py
+++ b/tests/test_decorators.py
@@ -42,6 +42,18 @@ def test_typed_keys():
     assert make_key((1,), {}, typed=True) != make_key((1.0,), {}, typed=True)
 
 
+def test_keyword_order_does_not_matter():
+    calls = []
+
+    @memoize
+    def area(width, height):
+        calls.append((width, height))
+        return width * height
+
+    assert area(width=2, height=3) == area(height=3, width=2) == 6
+    assert len(calls) == 1
+
+
 def test_decorated_functions_do_not_share_results():
     @memoize(maxsize=16)
     def add_one(x):
EOF_114329324912
: '>>>>> Start Test Output'
echo '>>>>> Start Test Output'
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 python3 -c 'import os, sys, pytest; rc = pytest.main(sys.argv[1:]); sys.stdout.flush(); sys.stderr.flush(); os._exit(int(rc))' -rA -p no:cacheprovider 'tests/test_decorators.py'
rc=$?
echo '>>>>> End Test Output'
restore 'tests/test_decorators.py'
exit $rc
