#!/bin/bash
set -uo pipefail
cd /testbed
git -c core.fileMode=false diff --stat d40e60f903b4e9914777ab8a88d7ca70d4d91c9f
restore() {
  for f in "$@"; do
    if git cat-file -e d40e60f903b4e9914777ab8a88d7ca70d4d91c9f:"$f" 2>/dev/null; then git checkout -q d40e60f903b4e9914777ab8a88d7ca70d4d91c9f -- "$f"; else rm -rf -- "$f"; fi
  done
}
restore 'tests/test_wrap.py'
find . -name '__pycache__' -type d -prune -exec rm -rf {} + 2>/dev/null
git apply --verbose - <<'EOF_114329324912' || { echo '>>>>> Tests Errored'; exit 1; }
diff --git a/tests/test_wrap.py b/tests/test_wrap.py
index de3afca..7bbd1c1 100644
--- a/tests/test_wrap.py
+++ b/tests/test_wrap.py
@@ -22,3 +22,8 @@ def test_fill_joins_with_newlines():
 def test_width_must_be_positive():
     with pytest.raises(ValueError):
         wrap("x", 0)
+
+
+def test_line_of_exactly_width_is_kept():
+    assert wrap("abcd efgh", 9) == ["abcd efgh"]
+    assert wrap("ab cd ef", 5) == ["ab cd", "ef"]
EOF_114329324912
: '>>>>> Start Test Output'
echo '>>>>> Start Test Output'
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 python3 -c 'import os, sys, pytest; rc = pytest.main(sys.argv[1:]); sys.stdout.flush(); sys.stderr.flush(); os._exit(int(rc))' -rA -p no:cacheprovider 'tests/test_wrap.py'
rc=$?
echo '>>>>> End Test Output'
restore 'tests/test_wrap.py'
exit $rc
