#!/bin/bash
set -uo pipefail
cd /testbed
git -c core.fileMode=false diff --stat ae7f207bf035b01cf77cc480cd515933ad210fa4
restore() {
  for f in "$@"; do
    if git cat-file -e ae7f207bf035b01cf77cc480cd515933ad210fa4:"$f" 2>/dev/null; then git checkout -q ae7f207bf035b01cf77cc480cd515933ad210fa4 -- "$f"; else rm -rf -- "$f"; fi
  done
}
restore 'tests/test_values.py'
find . -name '__pycache__' -type d -prune -exec rm -rf {} + 2>/dev/null
git apply --verbose - <<'EOF_114329324912' || { echo '>>>>> Tests Errored'; exit 1; }
diff --git a/tests/test_values.py b/tests/test_values.py
index 436bcfc..6ce4a53 100644
--- a/tests/test_values.py
+++ b/tests/test_values.py
@@ -24,3 +24,13 @@ def test_true_values():
 def test_not_a_bool():
     with pytest.raises(ValueError):
         to_bool("maybe")
+
+
+def test_false_values():
+    for v in ("no", "False", "off", "OFF"):
+        assert to_bool(v) is False
+
+
+def test_coerce_off_is_false():
+    assert coerce("off") is False
+    assert coerce("no") is False
EOF_114329324912
: '>>>>> Start Test Output'
echo '>>>>> Start Test Output'
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 python3 -c 'import os, sys, pytest; rc = pytest.main(sys.argv[1:]); sys.stdout.flush(); sys.stderr.flush(); os._exit(int(rc))' -rA -p no:cacheprovider 'tests/test_values.py'
rc=$?
echo '>>>>> End Test Output'
restore 'tests/test_values.py'
exit $rc
