#!/bin/bash
set -uo pipefail
cd /testbed
git -c core.fileMode=false diff --stat 9593e17a5a82a436cc32dc52dbd7cece2588481e
restore() {
  for f in "$@"; do
    if git cat-file -e 9593e17a5a82a436cc32dc52dbd7cece2588481e:"$f" 2>/dev/null; then git checkout -q 9593e17a5a82a436cc32dc52dbd7cece2588481e -- "$f"; else rm -rf -- "$f"; fi
  done
}
restore 'tests/test_loader.py'
find . -name '__pycache__' -type d -prune -exec rm -rf {} + 2>/dev/null
git apply --verbose - <<'EOF_114329324912' || { echo '>>>>> Tests Errored'; exit 1; }
diff --git a/tests/test_loader.py b/tests/test_loader.py
index 56f1224..62c7bab 100644
--- a/tests/test_loader.py
+++ b/tests/test_loader.py
@@ -25,3 +25,13 @@ def test_load_into_custom_environ(tmp_path):
     env = {}
     assert load_into(str(path), environ=env) == ["A", "B"]
     assert env == {"A": "1", "B": "2"}
+
+
+def test_existing_variables_win_by_default(tmp_path):
+    path = tmp_path / ".env"
+    path.write_text("A=from-file\nB=from-file\n")
+    env = {"A": "from-env"}
+    assert load_into(str(path), environ=env) == ["B"]
+    assert env == {"A": "from-env", "B": "from-file"}
+    assert load_into(str(path), environ=env, override=True) == ["A", "B"]
+    assert env["A"] == "from-file"
EOF_114329324912
: '>>>>> Start Test Output'
echo '>>>>> Start Test Output'
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 python3 -c 'import os, sys, pytest; rc = pytest.main(sys.argv[1:]); sys.stdout.flush(); sys.stderr.flush(); os._exit(int(rc))' -rA -p no:cacheprovider 'tests/test_loader.py'
rc=$?
echo '>>>>> End Test Output'
restore 'tests/test_loader.py'
exit $rc
