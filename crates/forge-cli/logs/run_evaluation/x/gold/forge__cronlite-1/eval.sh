#!/bin/bash
set -uo pipefail
cd /testbed
git -c core.fileMode=false diff --stat d7ce5f7ca36a43fc8553e6a607a583dd4027f483
restore() {
  for f in "$@"; do
    if git cat-file -e d7ce5f7ca36a43fc8553e6a607a583dd4027f483:"$f" 2>/dev/null; then git checkout -q d7ce5f7ca36a43fc8553e6a607a583dd4027f483 -- "$f"; else rm -rf -- "$f"; fi
  done
}
restore 'tests/test_fields.py'
find . -name '__pycache__' -type d -prune -exec rm -rf {} + 2>/dev/null
git apply --verbose - <<'EOF_114329324912' || { echo '>>>>> Tests Errored'; exit 1; }
diff --git a/tests/test_fields.py b/tests/test_fields.py
index 631e7ab..5206f3c 100644
--- a/tests/test_fields.py
+++ b/tests/test_fields.py
@@ -40,3 +40,8 @@ def test_error_names_the_field():
         parse_field("25", HOUR)
     assert info.value.field == "hour"
     assert "hour field" in str(info.value)
+
+
+def test_range_with_step_includes_its_end():
+    assert parse_field("0-30/10", MINUTE) == [0, 10, 20, 30]
+    assert parse_field("9-17/4", HOUR) == [9, 13, 17]
EOF_114329324912
: '>>>>> Start Test Output'
echo '>>>>> Start Test Output'
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 python3 -c 'import os, sys, pytest; rc = pytest.main(sys.argv[1:]); sys.stdout.flush(); sys.stderr.flush(); os._exit(int(rc))' -rA -p no:cacheprovider 'tests/test_fields.py'
rc=$?
echo '>>>>> End Test Output'
restore 'tests/test_fields.py'
exit $rc
