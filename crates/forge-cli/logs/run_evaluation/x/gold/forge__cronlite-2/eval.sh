#!/bin/bash
set -uo pipefail
cd /testbed
git -c core.fileMode=false diff --stat f5a99d2ce27aa918816fb1fbe6e64addd21aedb7
restore() {
  for f in "$@"; do
    if git cat-file -e f5a99d2ce27aa918816fb1fbe6e64addd21aedb7:"$f" 2>/dev/null; then git checkout -q f5a99d2ce27aa918816fb1fbe6e64addd21aedb7 -- "$f"; else rm -rf -- "$f"; fi
  done
}
restore 'tests/test_expression.py'
find . -name '__pycache__' -type d -prune -exec rm -rf {} + 2>/dev/null
git apply --verbose - <<'EOF_114329324912' || { echo '>>>>> Tests Errored'; exit 1; }
diff --git a/tests/test_expression.py b/tests/test_expression.py
index 29b513a..f139587 100644
--- a/tests/test_expression.py
+++ b/tests/test_expression.py
@@ -31,3 +31,10 @@ def test_weekday_only():
     e = CronExpression("0 9 * * MON")
     assert e.matches(datetime(2024, 5, 6, 9, 0))  # a Monday
     assert not e.matches(datetime(2024, 5, 7, 9, 0))
+
+
+def test_day_of_month_or_weekday_when_both_given():
+    e = CronExpression("0 0 1 * MON")
+    assert e.matches(datetime(2024, 5, 1))   # the 1st, a Wednesday
+    assert e.matches(datetime(2024, 5, 6))   # a Monday
+    assert not e.matches(datetime(2024, 5, 7))
EOF_114329324912
: '>>>>> Start Test Output'
echo '>>>>> Start Test Output'
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 python3 -c 'import os, sys, pytest; rc = pytest.main(sys.argv[1:]); sys.stdout.flush(); sys.stderr.flush(); os._exit(int(rc))' -rA -p no:cacheprovider 'tests/test_expression.py'
rc=$?
echo '>>>>> End Test Output'
restore 'tests/test_expression.py'
exit $rc
