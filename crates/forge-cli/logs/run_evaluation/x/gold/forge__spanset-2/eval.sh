#!/bin/bash
set -uo pipefail
cd /testbed
git -c core.fileMode=false diff --stat bebd0b427df82ff02b15e08a3c4920e565f225ec
restore() {
  for f in "$@"; do
    if git cat-file -e bebd0b427df82ff02b15e08a3c4920e565f225ec:"$f" 2>/dev/null; then git checkout -q bebd0b427df82ff02b15e08a3c4920e565f225ec -- "$f"; else rm -rf -- "$f"; fi
  done
}
restore 'tests/test_notation.py'
find . -name '__pycache__' -type d -prune -exec rm -rf {} + 2>/dev/null
git apply --verbose - <<'EOF_114329324912' || { echo '>>>>> Tests Errored'; exit 1; }
diff --git a/tests/test_notation.py b/tests/test_notation.py
index 65cada2..5b433d3 100644
--- a/tests/test_notation.py
+++ b/tests/test_notation.py
@@ -28,3 +28,10 @@ def test_bad_notation(text):
 def test_round_trip():
     for text in ["[1, 5)", "(-inf, 0]", "{}"]:
         assert format_interval(parse(text)) == text
+
+
+def test_decimal_and_exponent_bounds():
+    assert parse("[0.5, 1.5)") == Interval(0.5, 1.5)
+    assert parse("[-2.5, 1e3]") == Interval(-2.5, 1000.0, True, True)
+    assert parse("[1, 2.0]").upper == 2.0
+    assert format_interval(parse("(0.5, 2.25]")) == "(0.5, 2.25]"
EOF_114329324912
: '>>>>> Start Test Output'
echo '>>>>> Start Test Output'
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 python3 -c 'import os, sys, pytest; rc = pytest.main(sys.argv[1:]); sys.stdout.flush(); sys.stderr.flush(); os._exit(int(rc))' -rA -p no:cacheprovider 'tests/test_notation.py'
rc=$?
echo '>>>>> End Test Output'
restore 'tests/test_notation.py'
exit $rc
