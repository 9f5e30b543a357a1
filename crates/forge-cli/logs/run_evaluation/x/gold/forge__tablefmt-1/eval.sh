#!/bin/bash
set -uo pipefail
cd /testbed
git -c core.fileMode=false diff --stat 1c91a3a1cfc53d25190388545e5de98da1f9fca0
restore() {
  for f in "$@"; do
    if git cat-file -e 1c91a3a1cfc53d25190388545e5de98da1f9fca0:"$f" 2>/dev/null; then git checkout -q 1c91a3a1cfc53d25190388545e5de98da1f9fca0 -- "$f"; else rm -rf -- "$f"; fi
  done
}
restore 'tests/test_width.py'
find . -name '__pycache__' -type d -prune -exec rm -rf {} + 2>/dev/null
git apply --verbose - <<'EOF_114329324912' || { echo '>>>>> Tests Errored'; exit 1; }
diff --git a/tests/test_width.py b/tests/test_width.py
index df6ee27..a12fe00 100644
--- a/tests/test_width.py
+++ b/tests/test_width.py
@@ -16,3 +16,10 @@ def test_pad():
     assert pad("ab", 4, "right") == "  ab"
     assert pad("ab", 5, "center") == " ab  "
     assert pad("日本", 6) == "日本  "
+
+
+def test_combining_marks_take_no_column():
+    decomposed = "Cafe\u0301"  # 'Café' as macOS file names spell it
+    assert display_width(decomposed) == 4
+    assert pad(decomposed, 6) == decomposed + "  "
+    assert display_width("a\u200bb") == 2  # zero-width space
EOF_114329324912
: '>>>>> Start Test Output'
echo '>>>>> Start Test Output'
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 python3 -c 'import os, sys, pytest; rc = pytest.main(sys.argv[1:]); sys.stdout.flush(); sys.stderr.flush(); os._exit(int(rc))' -rA -p no:cacheprovider 'tests/test_width.py'
rc=$?
echo '>>>>> End Test Output'
restore 'tests/test_width.py'
exit $rc
