#!/bin/bash
set -uo pipefail
cd /testbed
git -c core.fileMode=false diff --stat afcc58597cf19041ecdbf6c9f5a041d06dce6394
restore() {
  for f in "$@"; do
    if git cat-file -e afcc58597cf19041ecdbf6c9f5a041d06dce6394:"$f" 2>/dev/null; then git checkout -q afcc58597cf19041ecdbf6c9f5a041d06dce6394 -- "$f"; else rm -rf -- "$f"; fi
  done
}
restore 'tests/test_interpolate.py'
find . -name '__pycache__' -type d -prune -exec rm -rf {} + 2>/dev/null
git apply --verbose - <<'EOF_114329324912' || { echo '>>>>> Tests Errored'; exit 1; }
diff --git a/tests/test_interpolate.py b/tests/test_interpolate.py
index bc75bd2..c20d20b 100644
--- a/tests/test_interpolate.py
+++ b/tests/test_interpolate.py
@@ -17,3 +17,8 @@ def test_default_when_unset():
     assert interpolate("${PORT:-8080}", {}) == "8080"
     assert interpolate("${PORT-8080}", {}) == "8080"
     assert interpolate("${PORT:-8080}", {"PORT": "9000"}) == "9000"
+
+
+def test_colon_dash_default_also_applies_to_empty_values():
+    assert interpolate("${PORT:-8080}", {"PORT": ""}) == "8080"
+    assert interpolate("${PORT-8080}", {"PORT": ""}) == ""
EOF_114329324912
: '>>>>> Start Test Output'
echo '>>>>> Start Test Output'
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 python3 -c 'import os, sys, pytest; rc = pytest.main(sys.argv[1:]); sys.stdout.flush(); sys.stderr.flush(); os._exit(int(rc))' -rA -p no:cacheprovider 'tests/test_interpolate.py'
rc=$?
echo '>>>>> End Test Output'
restore 'tests/test_interpolate.py'
exit $rc
